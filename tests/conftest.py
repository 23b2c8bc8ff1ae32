"""Shared fixtures: a tiny offline workflow config, a helper to run the real Snakemake DAG, and
the location of ../shared (real IMDB data and weights)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from textvision.settings import deep_merge

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TEXTVISION_SHARED", REPO.parent / "shared"))
IMDB = SHARED / "data" / "imdb.parquet"
RESNET18 = SHARED / "weights" / "resnet18_imagenet_conv1_to_layer3.pt"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# jobs call the `textvision` console script: put this interpreter's bin folder first on PATH
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

needs_imdb = pytest.mark.skipif(
    not IMDB.exists(),
    reason=f"real IMDB data absent: {IMDB} (set TEXTVISION_SHARED to the shared/ folder)",
)
needs_resnet18 = pytest.mark.skipif(
    not RESNET18.exists(),
    reason=f"shared ResNet-18 weights absent: {RESNET18} (set TEXTVISION_SHARED)",
)

# The tiny config of .test/config/config.yaml (every rule on 48 synthetic texts), written into
# each test's working directory with outputs under `out/`.
TINY = {**yaml.safe_load((REPO / ".test/config/config.yaml").read_text()), "outdir": "out"}


def write_config(workdir: Path, overrides: dict | None = None, name: str = "config.yaml") -> Path:
    """Write TINY (deep-merged with `overrides`) into `workdir/name`; return its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.write_text(yaml.safe_dump(deep_merge(TINY, overrides or {})))
    return path


def run_snakemake(
    workdir: Path,
    *args: str,
    configfile: str = "config.yaml",
    cores: int = 2,
    check: bool = True,
    timeout: int = 900,
) -> subprocess.CompletedProcess:
    """Run the real workflow in `workdir` with its config; return the finished process."""
    cmd = [
        *SNAKEMAKE,
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(workdir / configfile),
        "--cores",
        str(cores),
        *args,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=ENV
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Job counts per rule of a dry run (`snakemake -n`)."""
    proc = run_snakemake(workdir, "-n", *args)
    counts, table = {}, False
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("job ") and "count" in line:
            table = True
            continue
        if table:
            parts = line.split()
            if not parts or parts[0].startswith("-"):
                continue
            if parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts


def made_once(tmp_path_factory, name: str, make) -> Path:
    """The folder `name`, filled by `make(folder)` once per test session, also when several
    pytest-xdist workers ask for it: they share the parent of their temporary folders, and a
    file lock lets one make it while the others wait."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    with FileLock(f"{folder}.lock"):
        if not (folder / ".made").exists():
            shutil.rmtree(folder, ignore_errors=True)
            make(folder)
            (folder / ".made").touch()
    return folder


def _tiny(cores: int):
    def make(workdir: Path) -> None:
        write_config(workdir)
        run_snakemake(workdir, cores=cores)

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny config run once through the whole DAG; tests read its outputs, never write."""
    return made_once(tmp_path_factory, "tiny_run", _tiny(cores=2))


@pytest.fixture(scope="session")
def tiny_run_one_core(tmp_path_factory) -> Path:
    """The same tiny config run again, with `--cores 1` (the first used 2)."""
    return made_once(tmp_path_factory, "tiny_run_one_core", _tiny(cores=1))
