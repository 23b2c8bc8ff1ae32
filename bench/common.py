"""Shared helpers: paths, logging, fresh-subprocess runs, peak memory, inputs, formatting."""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TEXTVISION_SHARED", REPO.parent / "shared"))
IMDB = SHARED / "data" / "imdb.parquet"
IMDB_EMBEDDINGS = REPO / "results" / "imdb" / "embeddings" / "embeddings.h5"
MARK = "BENCH_RESULT "

log = logging.getLogger("bench")


def setup_logging(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    for handler in (logging.FileHandler(path), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(fmt)
        log.addHandler(handler)


def median(values) -> float:
    return float(statistics.median(values))


def geomean(values) -> float:
    return float(np.exp(np.mean(np.log(values))))


# -- fresh-subprocess runs -----------------------------------------------------------------------
def worker(task: str, threads: int, timeout: float = 1800, **params) -> dict:
    """Run `bench.worker` TASK in a fresh interpreter; its result dictionary."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "PYTHONWARNINGS": "ignore",
        "TQDM_DISABLE": "1",
    }
    cmd = [sys.executable, "-m", "bench.worker", task, json.dumps({**params, "threads": threads})]
    proc, seconds, foreign = run_measured(cmd, cwd=REPO, env=env, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode or not lines:
        log.error("worker %s %s failed (exit %d):\n%s", task, params, proc.returncode, proc.stderr)
        raise RuntimeError(f"bench worker {task} failed: {proc.stderr.strip()[-2000:]}")
    result = json.loads(lines[-1][len(MARK) :])
    result["foreign_load"] = foreign
    log.info(
        "%s %s -> %s (%.1f s with start-up)",
        task,
        {k: v for k, v in params.items() if k not in ("texts",)},
        {k: v for k, v in result.items() if not isinstance(v, list)},
        seconds,
    )
    return result


def repeat(runs: int, threads: int, jobs: list[tuple[str, str, dict]]) -> dict[str, list[dict]]:
    """`runs` rounds of the (name, task, params) jobs, alternating within each round."""
    results: dict[str, list[dict]] = {name: [] for name, _, _ in jobs}
    for run in range(runs):
        for name, task, params in jobs:
            results[name].append(worker(task, threads, run=run, **params))
    return results


FOREIGN: list[float] = []  # share of all CPUs used by other processes during each worker


def run_measured(cmd: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run `cmd` (output captured as text); the process, its wall seconds, and the share of
    all CPUs that other processes used meanwhile (also appended to FOREIGN)."""
    busy, ours = cpu_busy_seconds(), own_cpu_seconds()
    tic = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    seconds = time.perf_counter() - tic
    foreign = max((cpu_busy_seconds() - busy) - (own_cpu_seconds() - ours), 0.0)
    FOREIGN.append(foreign / (seconds * (os.cpu_count() or 1)))
    return proc, seconds, FOREIGN[-1]


def cpu_busy_seconds() -> float:
    """CPU seconds spent busy on all CPUs since boot (/proc/stat)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    import resource

    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


# -- the workflow ------------------------------------------------------------------------------
SNAKEMAKE = [sys.executable, "-m", "snakemake"]  # this interpreter's Snakemake


def snakemake_command(
    workdir: str | Path, configfile: str | Path, *extra: str, cores: int | None
) -> list[str]:
    """The command line that runs this repository's Snakefile in `workdir` with `configfile`:
    `--cores cores` (none where `cores` is None: `extra` then names a profile or `--jobs`), then
    `extra`. The tests and the benchmarks run the workflow with it."""
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    cmd += ["--configfile", str(configfile)]
    cmd += [] if cores is None else ["--cores", str(cores)]
    return [*cmd, *extra]


def snakemake_env() -> dict[str, str]:
    """This process's environment with this interpreter's bin folder first on PATH: the
    workflow's jobs call the `textvision` console script."""
    return interpreter_env(Path(sys.executable))


def interpreter_env(python: Path) -> dict[str, str]:
    """This process's environment with `python`'s bin folder first on PATH (the scripts of its
    environment: `textvision`, TINTOlib's `mpirun`)."""
    return {**os.environ, "PATH": f"{Path(python).parent}{os.pathsep}{os.environ['PATH']}"}


# -- memory (inside workers) ---------------------------------------------------------------------
def memory_kb() -> dict:
    """VmRSS and VmHWM (peak resident set) of this process, in KiB."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    return out


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class Timed:
    """Context: wall seconds, and peak RSS above the RSS at entry (VmHWM reset at entry)."""

    def __enter__(self):
        import gc

        gc.collect()
        self.reset = reset_peak()
        self.base_kb = memory_kb()["VmRSS"]
        self.tic = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.tic
        mem = memory_kb()
        self.peak_kb = mem["VmHWM"]
        self.extra_kb = mem["VmHWM"] - self.base_kb
        return False

    def result(self) -> dict:
        return {
            "seconds": self.seconds,
            "peak_mb": self.peak_kb / 1024,
            "extra_mb": self.extra_kb / 1024,
            "base_mb": self.base_kb / 1024,
            "peak_reset": self.reset,
        }


# -- inputs ------------------------------------------------------------------------------------
def imdb_texts(n: int, imdb: Path = IMDB, seed: int = 0) -> list[str]:
    """`n` real IMDB reviews, a seeded random sample, HTML line breaks cleaned as the
    workflow's `prepare_data` does."""
    import pandas as pd

    from textvision.data.tables import clean_texts

    if not Path(imdb).exists():
        raise FileNotFoundError(f"{imdb}: real IMDB reviews not found (set TEXTVISION_SHARED)")
    texts = pd.read_parquet(imdb, columns=["text"])["text"]
    rows = np.random.default_rng(seed).permutation(len(texts))[:n]
    return clean_texts(list(texts.iloc[rows]), clean_html=True)


def ensure_embeddings(
    path: Path | None,
    n_rows: int,
    out: Path,
    imdb: Path,
    threads: int,
    workflow: bool = True,
    model: str | None = None,
) -> Path:
    """An `embeddings.h5` with at least `n_rows` rows: `path` if given, else the workflow's
    real-IMDB embeddings under results/imdb if present (and `workflow`), else made here with
    the package (prepare_data + embed + merge on `n_rows` IMDB reviews, last 6 layers of
    `model` (default the offline MiniLM): `out/embeddings_<n_rows>[_<model>].h5` beside
    `out/dataset_<n_rows>.parquet`)."""
    import h5py

    for candidate in (path, IMDB_EMBEDDINGS if workflow else None):
        if candidate and Path(candidate).exists():
            with h5py.File(candidate, "r") as fh:
                if len(fh["cls"]) >= n_rows:
                    return Path(candidate)
                log.info("%s has %d rows, %d wanted", candidate, len(fh["cls"]), n_rows)
    made = out / f"embeddings_{n_rows}{'_' + Path(model).name if model else ''}.h5"
    if made.exists():
        return made
    log.info("embedding %d IMDB reviews from %s into %s", n_rows, imdb, made)
    import torch

    from textvision.config.settings import DataSettings, EmbedSettings, MergeSettings
    from textvision.data.prepare import prepare_dataset
    from textvision.embed.step import embed_dataset, merge_shards

    torch.set_num_threads(threads)
    dataset = out / f"dataset_{n_rows}.parquet"
    if not dataset.exists():
        prepare_dataset(dataset, DataSettings.make(source=str(imdb), n_per_class=n_rows // 2))
    shard = made.with_suffix(".shard.h5")
    model_key = {"model": model} if model else {}
    embed_dataset(dataset, shard, EmbedSettings.make(layers=6, max_length=512, **model_key))
    merge_shards([shard], dataset, made, MergeSettings.make())
    shard.unlink()
    return made


def subset_embeddings(src: Path, n_rows: int, dst: Path) -> Path:
    """The first `n_rows` rows of a workflow `embeddings.h5` (cls, id, label, split, attributes)."""
    import h5py

    if dst.exists():
        return dst
    tmp = dst.with_suffix(".tmp.h5")
    with h5py.File(src, "r") as a, h5py.File(tmp, "w") as b:
        for key in ("cls", "id", "label", "split"):
            data = a[key][:n_rows]
            if key == "cls":
                b.create_dataset(key, data=data, chunks=(min(256, n_rows), *data.shape[1:]))
            else:
                b[key] = data
        for key, value in a.attrs.items():
            b.attrs[key] = value
    tmp.rename(dst)
    return dst


def read_matrix(path: Path, n_rows: int) -> np.ndarray:
    """`cls[:n_rows]` flattened to `[n_rows, layers * hidden]` float32."""
    import h5py

    with h5py.File(path, "r") as fh:
        cls = fh["cls"][:n_rows]
    return cls.reshape(len(cls), -1).astype(np.float32)


# -- formatting ----------------------------------------------------------------------------------
def fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def ratio(value: float) -> str:
    return f"{value:.2f}x"
