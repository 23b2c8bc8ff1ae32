"""A rerun the workflow refuses keeps the last good run: a copy of the session's tiny run, then
each refused change, then every product of the good run compared byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import run_snakemake, write_config

# what a run rewrites whatever its outcome: its own logs, timings and lock
NOT_PRODUCTS = ("logs", "benchmarks")


def products(out: Path) -> dict[Path, bytes]:
    return {
        path.relative_to(out): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.is_file()
        and path.relative_to(out).parts[0] not in NOT_PRODUCTS
        and not path.name.startswith(".")
    }


@pytest.fixture
def good_run(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run (outputs and Snakemake's records) to refuse changes in."""
    work = tmp_path / "run"
    shutil.copytree(tiny_run, work, symlinks=True)
    return work


def assert_kept(work: Path, before: dict[Path, bytes], but: tuple[str, ...] = ()) -> None:
    after = products(work / "out")
    assert sorted(after) == sorted(before)
    changed = [str(rel) for rel in before if str(rel) not in but and after[rel] != before[rel]]
    assert changed == []


@pytest.mark.slow
def test_a_change_refused_at_start_up_runs_no_job(good_run):
    """BatchNorm to adapt in a slice without BatchNorm (AlexNet): refused while the workflow
    is read, naming the config keys, before any job starts."""
    before = products(good_run / "out")
    write_config(good_run, {"training": {"batchnorm": "adapt"}}, name="adapt.yaml")
    proc = run_snakemake(good_run, configfile="adapt.yaml", check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "training.batchnorm" in text and "has no BatchNorm layer to adapt" in text
    assert "rule " not in text.split("ConfigError")[0]  # no job was scheduled
    assert_kept(good_run, before)


@pytest.mark.slow
def test_a_step_refusing_at_run_time_leaves_its_previous_outputs(good_run):
    """A truncated `embeddings.h5` makes every step that reads it run again and refuse:
    Snakemake keeps their outputs while they run (`update`) and puts them back when they fail,
    so the mapping, the images and the baseline of the good run are all still there."""
    before = products(good_run / "out")
    embeddings = good_run / "out/embeddings/embeddings.h5"
    data = embeddings.read_bytes()
    embeddings.write_bytes(data[: len(data) // 3])
    proc = run_snakemake(good_run, "--keep-going", check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "Restored previous version of" in text
    assert_kept(good_run, before, but=("embeddings/embeddings.h5",))
