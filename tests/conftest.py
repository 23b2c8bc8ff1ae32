"""Shared fixtures: a tiny offline workflow config, a helper to run the real Snakemake DAG, the
location of ../shared (real IMDB data and weights), and tiny training inputs and jobs."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from filelock import FileLock

from bench.common import IMDB, REPO, SHARED, snakemake_command, snakemake_env
from textvision.config.settings import TrainSettings, deep_merge
from textvision.core.io import seal, set_attrs, string_array

RESNET18 = SHARED / "weights" / "resnet18_imagenet_conv1_to_layer3.pt"
ENV = snakemake_env()  # this interpreter's bin folder first on PATH, for the jobs' `textvision`

needs_imdb = pytest.mark.skipif(
    not IMDB.exists(),
    reason=f"real IMDB data absent: {IMDB} (set TEXTVISION_SHARED to the shared/ folder)",
)
needs_resnet18 = pytest.mark.skipif(
    not RESNET18.exists(),
    reason=f"shared ResNet-18 weights absent: {RESNET18} (set TEXTVISION_SHARED)",
)

# Free space the suite needs in the temporary folder: two tiny workflow runs kept for the session
# (~250 MB each) and the folders of the tests running at the moment (a passed test's is removed).
MIN_FREE_GB = 3


def pytest_sessionstart(session):
    """Stop before any test, saying why, where the temporary folder is nearly full: a full disk
    fails tests far from their cause, or stalls a workflow run."""
    tmp = Path(session.config.option.basetemp or tempfile.gettempdir()).absolute()
    while not tmp.exists():
        tmp = tmp.parent
    free = shutil.disk_usage(tmp).free
    if free < MIN_FREE_GB * 2**30:
        raise pytest.UsageError(
            f"{tmp}: {free / 2**30:.1f} GB free; the tests need at least {MIN_FREE_GB} GB there "
            "(free some space, or point TMPDIR or --basetemp elsewhere)"
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
    cmd = snakemake_command(workdir, workdir / configfile, *args, cores=cores)
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


def write_images(path, n=96, pixels=16, seed=0, classes=2):
    """Images with a learnable class signal: class k brightens block k."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = rng.normal(0, 0.3, size=(n, pixels, pixels)).astype(np.float32)
    for k in range(classes):
        images[labels == k, 4 * k : 4 * k + 4, :6] += 1.5
    split = np.where(np.arange(n) % 5 == 0, "val", "train")
    with h5py.File(path, "w") as fh:
        fh["images"] = images
        fh["label"] = labels
        fh["split"] = string_array(split)
        fh["id"] = string_array(range(n))
        train = images[split == "train"]
        fh["pixel_mean"], fh["pixel_std"] = train.mean(0), train.std(0)
        set_attrs(
            fh,
            {
                "pixels": pixels,
                "method": "deepinsight",
                "discretization": "bin",
                "layout": "fitted",
                "mu": float(train.mean()),
                "sigma": float(train.std()),
                "eps": 1e-8,
                "label_names": [f"c{k}" for k in range(classes)],
                "synthetic": True,
            },
        )
        seal(fh)
    return path


def train_job(images, outdir, backbone="alexnet", seed=0, mapping=None, **kw):
    """One `train_backbone` job on `images` (with `mapping`: also its bundle), tiny settings:
    random weights, 3 epochs, batch 16, on the CPU; `kw` overrides `training` keys or `device`."""
    from textvision.train.step import train_backbone

    args = dict(
        weights="none",
        lr={backbone: {"head": 1e-3, "classifier": 1e-3}},
        epochs=3,
        batch_size=16,
        upsample=3,
        device="cpu",
    )
    settings = TrainSettings.make(backbone=backbone, **{**args, **kw})
    return train_backbone(images, outdir, settings, backbone=backbone, seed=seed, mapping=mapping)


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
