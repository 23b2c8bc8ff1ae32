"""Every step against a full disk, run as a user runs it (`textvision <step> ...`) on the tiny
run's files: exit 1, one line naming the output and "No space left on device", nothing left on
the disk. The disk is a small tmpfs filled to the last byte where this machine lets the test
mount one; elsewhere every file put in place there fails with ENOSPC, as on a full disk."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from textvision.cli import main
from textvision.core import io

FILLER = "filler"
STEPS = [
    "prepare-data", "embed", "merge-embeddings", "fit-mapping", "render-images", "plot-mapping",
    "train", "baseline", "domain-shift", "predict", "explain", "report",
]  # fmt: skip


def fill(folder: Path) -> None:
    """Write into `folder` until its disk has no byte left."""
    with contextlib.suppress(OSError), open(folder / FILLER, "wb", buffering=0) as fh:
        while True:
            fh.write(b"\0" * 4096)


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    point = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    point.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(point)]
    if subprocess.run(mount, capture_output=True).returncode == 0:
        fill(point)
        yield point
        subprocess.run(["umount", str(point)], capture_output=True)
        return
    replace = os.replace

    def no_space(src, dst, *args, **kwargs):
        if Path(dst).is_relative_to(point):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(io.os, "replace", no_space)
    yield point


def steps(run: Path, disk: Path) -> dict[str, tuple[list[str], Path]]:
    """Each step's arguments with its output on `disk`, its inputs from the tiny run."""
    out = run / "out"
    bundle = out / "train/alexnet/seed0/bundle"
    texts = disk.parent / "texts.csv"
    texts.write_text('text\n"A wonderful film."\n"Dull."\n')
    quick = ["--set", "epochs=1"]
    return {
        "prepare-data": (["prepare-data", "--out", str(disk / "d.parquet")], disk / "d.parquet"),
        "embed": (
            ["embed", "--dataset", str(out / "data/dataset.parquet"), "--out", str(disk / "e.h5")],
            disk / "e.h5",
        ),
        "merge-embeddings": (
            ["merge-embeddings", "--dataset", str(out / "data/dataset.parquet"),
             "--out", str(disk / "m.h5"), str(out / "embeddings/shards/shard0-of1.h5")],
            disk / "m.h5",
        ),
        "fit-mapping": (
            ["fit-mapping", "--embeddings", str(out / "embeddings/embeddings.h5"),
             "--out", str(disk / "map.h5"), "--set", "pixels=8", "--set", "projector=pca"],
            disk / "map.h5",
        ),
        "render-images": (
            ["render-images", "--embeddings", str(out / "embeddings/embeddings.h5"),
             "--mapping", str(out / "deepinsight/mapping.h5"), "--out", str(disk / "i.h5")],
            disk / "i.h5",
        ),
        "plot-mapping": (
            ["plot-mapping", "--mapping", str(out / "deepinsight/mapping.h5"),
             "--images", str(out / "images/images.h5"), "--outdir", str(disk / "figs")],
            disk / "figs",
        ),
        "train": (
            ["train", "--images", str(out / "images/images.h5"), "--outdir", str(disk / "t"),
             "--backbone", "alexnet", "--seed", "0", "--mapping",
             str(out / "deepinsight/mapping.h5"), "--set", "weights=none", *quick],
            disk / "t",
        ),
        "baseline": (
            ["baseline", "--embeddings", str(out / "embeddings/embeddings.h5"),
             "--out", str(disk / "b/metrics.json")],
            disk / "b",
        ),
        "domain-shift": (
            ["domain-shift", "--images", str(out / "images/images.h5"), "--backbone", "alexnet",
             "--out-json", str(disk / "dom.json"), "--outdir", str(disk / "dom"),
             "--set", "training.weights=none", "--set", "n_reference=8", "--set",
             "max_images=16"],
            disk / "dom.json",
        ),
        "predict": (
            ["predict", "--model", str(bundle), "--input", str(texts),
             "--out", str(disk / "p.csv")],
            disk / "p.csv",
        ),
        "explain": (
            ["explain", "--model", str(bundle), "--input", str(texts), "--out",
             str(disk / "x"), "--steps", "4", "--references", "0"],
            disk / "x",
        ),
        "report": (
            ["report", "--dataset", str(out / "data/dataset.parquet"),
             "--embeddings", str(out / "embeddings/embeddings.h5"),
             "--mapping", str(out / "deepinsight/mapping.h5"), "--outdir", str(disk / "r"),
             str(out / "train/alexnet/seed0/metrics.json")],
            disk / "r",
        ),
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_a_full_disk_stops_every_step_with_one_line_and_leaves_nothing(
    tiny_run, full_disk, capsys, step
):
    table = steps(tiny_run, full_disk)
    assert sorted(table) == sorted(STEPS)
    argv, output = table[step]
    assert main(argv) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1, err
    assert "No space left on device" in err[0] and str(full_disk) in err[0], err[0]
    assert str(output) in err[0] or str(output.parent) in err[0], err[0]
    assert sorted(p.name for p in full_disk.iterdir()) in ([], [FILLER])
