"""End to end: `snakemake --cores N` on the offline default (config/config.yaml) in a fresh
working directory; then incremental rebuilds, counted from dry runs after the completed run."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import yaml

from bench.common import FOREIGN, REPO, log, run_measured, snakemake_command, snakemake_env
from textvision.config.schema import prepare_config

CHANGES = {
    "perplexity": 'deepinsight={"tsne":{"perplexity":7}}',
    "learning_rate": 'training={"lr":{"vgg16":{"head":1e-4}}}',
}
EMBEDDING_RULES = ("embed_shard", "merge_embeddings")


def snakemake(workdir: Path, threads: int, *extra: str, timeout: float = 3600):
    env = snakemake_env()
    env.pop("TQDM_DISABLE", None)
    cmd = snakemake_command(workdir, REPO / "config" / "config.yaml", *extra, cores=threads)
    proc, seconds, foreign = run_measured(cmd, env=env, timeout=timeout)
    log.info(
        "%s: exit %d in %.1f s (other processes: %.0f%% of the CPUs)",
        " ".join(cmd[3:]),
        proc.returncode,
        seconds,
        100 * foreign,
    )
    if proc.returncode:
        log.error("snakemake failed:\n%s", proc.stderr[-5000:])
        raise RuntimeError(f"snakemake {' '.join(extra)} failed: {proc.stderr[-2000:]}")
    return proc.stdout + proc.stderr, seconds


def job_counts(output: str) -> dict[str, int]:
    """The `Job stats` table of a (dry) run: rule -> jobs; empty when nothing is to be done."""
    counts: dict[str, int] = {}
    if "Job stats:" not in output:
        return counts
    table = output.split("Job stats:", 1)[1].splitlines()
    for line in table[3:]:
        match = re.match(r"^(\S+)\s+(\d+)\s*$", line)
        if not match:
            break
        if match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="textvision-bench-e2e-"))
    try:
        walls, loads, jobs = [], [], {}
        for attempt in range(args.e2e_runs):
            if attempt:
                shutil.rmtree(workdir / "results", ignore_errors=True)
                shutil.rmtree(workdir / ".snakemake", ignore_errors=True)
            output, seconds = snakemake(workdir, args.threads)
            walls.append(seconds)
            loads.append(FOREIGN[-1])
            jobs = job_counts(output)
        log.info("end to end: %s s, jobs %s", walls, jobs)
        dry = {}
        for name, change in CHANGES.items():
            output, _ = snakemake(workdir, args.threads, "-n", "--config", change)
            dry[name] = job_counts(output)
            log.info("dry run after %s: %s", change, dry[name])
        nothing, _ = snakemake(workdir, args.threads, "-n")
        rerun_nothing = job_counts(nothing)
    finally:
        if not args.keep_e2e:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = sorted(walls)[len(walls) // 2]
    n_jobs = sum(v for k, v in jobs.items() if k != "all")
    embed_jobs = sum(dry["perplexity"].get(rule, 0) for rule in EMBEDDING_RULES)
    lr = dry["learning_rate"]
    config = prepare_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    training = config["training"]
    seeds = len(training["seeds"])
    synthetic = config["data"]["synthetic"]
    texts = synthetic["n_per_class"] * synthetic["n_classes"]
    lr_ok = lr.get("train", 0) == seeds and lr.get("report", 0) == 1
    lr_ok = lr_ok and set(lr) <= {"train", "report", "all"}

    def listing(counts):
        return ", ".join(f"{k} {v}" for k, v in counts.items() if k != "all") or "nothing"

    rows = [
        [
            "end to end, offline default",
            f"`snakemake --cores {args.threads}`, config/config.yaml ({texts} synthetic texts, "
            f"MiniLM, {len(training['backbones'])} backbones x {training['epochs']} epochs, "
            "baseline, report), fresh working directory",
            "-",
            f"{wall / 60:.2f} min ({n_jobs} jobs)",
            "-",
            "<= 5 min wall",
            "yes" if wall <= 300 else "**no**",
            f"{len(walls)} run(s): "
            + ", ".join(f"{w:.0f} s" for w in walls)
            + "; other processes used "
            + ", ".join(f"{x:.0%}" for x in loads)
            + " of the CPUs meanwhile",
        ],
        [
            "incremental: perplexity 30 -> 7",
            f"`snakemake -n --config '{CHANGES['perplexity']}'` after the completed run",
            "-",
            f"{embed_jobs} embedding jobs",
            "-",
            "0 embedding jobs",
            "yes" if embed_jobs == 0 else "**no**",
            f"reruns: {listing(dry['perplexity'])}",
        ],
        [
            "incremental: vgg16 head learning rate",
            f"`snakemake -n --config '{CHANGES['learning_rate']}'`",
            "-",
            f"{lr.get('train', 0)} training job(s), {lr.get('report', 0)} report",
            "-",
            f"1 training job per seed ({seeds} seed{'s' if seeds > 1 else ''}) + report",
            "yes" if lr_ok else "**no**",
            f"reruns: {listing(lr)}; unchanged config: {listing(rerun_nothing)}",
        ],
    ]
    met = {
        "end_to_end": wall <= 300,
        "incremental_perplexity": embed_jobs == 0,
        "incremental_lr": lr_ok,
    }
    return {
        "rows": rows,
        "raw": {
            "walls": walls,
            "foreign_load": loads,
            "jobs": jobs,
            "dry": dry,
            "nothing": rerun_nothing,
        },
        "met": met,
    }
