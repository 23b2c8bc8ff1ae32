"""The real run, before and after: two complete `snakemake` runs of the same settings (two
commits, or two configs), compared rule by rule from their logs, with CPU time and peak memory
from the after run's benchmark files and each backbone's validation accuracy.

    python -m bench.realrun --before LOG DIR --after LOG DIR

LOG is the run's Snakemake log (`.snakemake/log/*.snakemake.log`, or what the command printed),
DIR its output folder (`results/imdb`). Prints a Markdown section.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from textvision.core.markdown import markdown_table
from textvision.report.costs import per_rule, read_costs

STAMP = re.compile(r"\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")
RULE = re.compile(r"(?:local)?(?:rule|checkpoint) (\w+):")
JOBID = re.compile(r"\s+jobid: (\d+)")
WILDCARDS = re.compile(r"\s+wildcards: (.+)")
FINISHED = re.compile(r"Finished jobid: (\d+) \(Rule: (\w+)\)")
ELAPSED = re.compile(r"Elapsed time: (?:(\d+) days?, )?(\d+):(\d\d):(\d\d(?:\.\d+)?)")


def read_log(path: Path) -> dict:
    """Each finished job's rule, wildcards, start and end; the run's elapsed time."""
    now = rule = None
    started, jobs, elapsed = {}, [], None
    for line in path.read_text().splitlines():
        if match := STAMP.fullmatch(line.strip()):
            now = datetime.datetime.strptime(match[1], "%a %b %d %H:%M:%S %Y")
        elif match := RULE.fullmatch(line.strip()):
            rule, jobid = match[1], None
        elif (match := JOBID.fullmatch(line)) and rule:
            jobid = match[1]
            started[jobid] = {"rule": rule, "start": now, "wildcards": ""}
        elif (match := WILDCARDS.fullmatch(line)) and rule and jobid in started:
            started[jobid]["wildcards"] = match[1]
        elif (match := FINISHED.search(line)) and match[1] in started:
            jobs.append({**started.pop(match[1]), "end": now})
        elif match := ELAPSED.search(line):
            days, hours, minutes, seconds = match.groups()
            elapsed = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60
            elapsed += float(seconds)
    if elapsed is None:
        raise SystemExit(f"{path}: no 'Elapsed time' line: not the log of a completed run")
    for job in jobs:
        job["wall_s"] = (job["end"] - job["start"]).total_seconds()
    return {"jobs": [job for job in jobs if job["rule"] != "all"], "elapsed_s": elapsed}


def per_rule_wall(jobs: list[dict]) -> dict[str, tuple[int, float]]:
    """rule -> (jobs, sum of their wall times), through `per_rule` (no CPU time, no memory)."""
    frame = pd.DataFrame(jobs, columns=["rule", "wall_s"]).assign(cpu_s=np.nan, max_rss_mb=np.nan)
    table = per_rule(frame)
    return {row.rule: (row.jobs, row.wall_s_total) for row in table.itertuples()}


def phase_s(jobs: list[dict], rule: str) -> float:
    """Wall clock from the rule's first job's start to its last job's end."""
    mine = [job for job in jobs if job["rule"] == rule]
    return (max(j["end"] for j in mine) - min(j["start"] for j in mine)).total_seconds()


def accuracies(results: Path) -> dict[str, float]:
    """Validation accuracy (best epoch) per trained model, seed 0, and the logistic baseline."""
    files = sorted(results.glob("train/**/seed0/metrics.json"))
    files += sorted(results.glob("baselines/*/metrics.json"))
    found = {}
    for path in files:
        name = path.parent.relative_to(results).as_posix()
        name = name.removeprefix("train/").removesuffix("/seed0").removeprefix("baselines/")
        found[name] = json.loads(path.read_text())["val_accuracy_best"]
    return found


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _clock(seconds: float) -> str:
    return f"{seconds:,.0f} ({int(seconds // 60)}:{int(seconds % 60):02d})"


RULE_COLUMNS = [
    "rule", "jobs before / after", "before: wall s", "after: wall s", "after: CPU s",
    "after: peak RSS MB",
]  # fmt: skip
MODEL_COLUMNS = [
    "model", "before: train s", "after: train s", "before: val accuracy", "after: val accuracy",
]  # fmt: skip


def section(before: tuple[Path, Path], after: tuple[Path, Path]) -> str:
    """The Markdown table of both runs, by rule, by backbone and whole."""
    logs = {"before": read_log(before[0]), "after": read_log(after[0])}
    walls = {side: per_rule_wall(log["jobs"]) for side, log in logs.items()}
    costs = read_costs(sorted((after[1] / "benchmarks").rglob("*.tsv")))
    costs = per_rule(costs).set_index("rule") if not costs.empty else None
    rules = []
    for rule in dict.fromkeys([*walls["before"], *walls["after"]]):
        jobs_b, wall_b = walls["before"].get(rule, (0, None))
        jobs_a, wall_a = walls["after"].get(rule, (0, None))
        cpu = rss = None
        if costs is not None and rule in costs.index:
            cpu, rss = costs.at[rule, "cpu_s_total"], costs.at[rule, "max_rss_mb"]
        rules.append([rule, f"{jobs_b} / {jobs_a}", _s(wall_b), _s(wall_a), _s(cpu), _s(rss)])
    phase = {side: phase_s(log["jobs"], "train") for side, log in logs.items()}
    whole = {side: log["elapsed_s"] for side, log in logs.items()}
    times = {
        side: {job["wildcards"]: job["wall_s"] for job in log["jobs"] if job["rule"] == "train"}
        for side, log in logs.items()
    }
    accuracy = {"before": accuracies(before[1]), "after": accuracies(after[1])}
    models = []
    for name in dict.fromkeys([*accuracy["before"], *accuracy["after"]]):
        key = f"backbone={name}, seed=0"
        train_s = [_s(times[side].get(key)) for side in ("before", "after")]
        val_accuracy = [_acc(accuracy[side].get(name)) for side in ("before", "after")]
        models.append([name, *train_s, *val_accuracy])
    lines = [
        markdown_table(RULE_COLUMNS, rules),
        # the whole-run rows, their blank cells written `| |` (as bench/README.md holds them)
        f"| train (wall clock of the phase) | | {_s(phase['before'])} | {_s(phase['after'])} | | |",
        f"| **the whole run (Snakemake's elapsed time)** | | **{_clock(whole['before'])}** "
        f"| **{_clock(whole['after'])}** | | |",
        f"| **after / before** | | | **{whole['after'] / whole['before']:.2f}** | | |",
        "",
        markdown_table(MODEL_COLUMNS, models),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for side in ("before", "after"):
        parser.add_argument(f"--{side}", nargs=2, type=Path, required=True, metavar=("LOG", "DIR"))
    args = parser.parse_args(argv)
    print(section(tuple(args.before), tuple(args.after)), end="")


if __name__ == "__main__":
    main()
