"""The operating system's failures and damaged intermediates as one-line messages, and the
output folder's lock: non-zero exit, the path named, nothing partial left."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid

import h5py
import pytest
from conftest import ENV, REPO, write_images
from test_reliability import fit, write_embeddings

from bench.common import snakemake_command
from textvision.cli import main
from textvision.core.errors import InputError
from textvision.core.lock import LOCK_NAME, acquire_outdir, release_outdir


@contextlib.contextmanager
def mounted(tmp_path, options: str):
    """A small tmpfs (a full disk, a read-only folder) where this machine lets the test mount
    one; the test is skipped otherwise."""
    point = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
    point.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip()[:80]})")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], capture_output=True)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def test_a_full_disk_names_the_output_and_leaves_nothing(tmp_path, capsys):
    emb = write_embeddings(tmp_path / "e.h5", n=2000, hidden=64)
    with mounted(tmp_path, "size=64k") as disk:
        out = disk / "m.h5"
        assert fit(emb, tmp_path / "m.h5") == 0
        capsys.readouterr()
        argv = ["render-images", "--embeddings", str(emb), "--mapping", str(tmp_path / "m.h5")]
        assert main([*argv, "--out", str(out)]) == 1
        line = one_line_error(capsys)
        assert f"{out}: cannot write" in line and "No space left on device" in line
        assert os.listdir(disk) == []


def test_a_read_only_folder_names_the_output(tmp_path, capsys):
    with mounted(tmp_path, "ro,size=64k") as folder:
        out = folder / "d.parquet"
        assert main(["prepare-data", "--out", str(out)]) == 1
        assert f"{out}: cannot write" in one_line_error(capsys)
        assert main(["prepare-data", "--out", str(folder / "sub" / "d.parquet")]) == 1
        assert "cannot create its folder (Read-only file system)" in one_line_error(capsys)
        assert os.listdir(folder) == []


def test_an_output_under_a_file_names_the_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    out = tmp_path / "taken" / "d.parquet"
    assert main(["prepare-data", "--out", str(out)]) == 1
    assert f"({tmp_path / 'taken'} is a file, not a folder)" in one_line_error(capsys)


def _flip_one_value(path, dataset):
    with h5py.File(path, "a") as fh:
        data = fh[dataset]
        data[0] = data[0] + 1


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("images", "is corrupted or was modified"),
        ("attribute", "is corrupted or was modified"),
        ("unsealed", "carries no content checksum"),
    ],
)
def test_a_damaged_images_file_names_the_command_that_rebuilds_it(
    tmp_path, capsys, damage, expected
):
    images = write_images(tmp_path / "images.h5")
    with h5py.File(images, "a") as fh:
        if damage == "images":
            fh["images"][0, 0, 0] += 1.0
        elif damage == "attribute":
            fh.attrs["mu"] = 0.5
        else:
            del fh.attrs["sha256"]
    out = tmp_path / "t"
    argv = ["train", "--images", str(images), "--outdir", str(out), "--backbone", "alexnet"]
    argv += ["--seed", "0", "--set", "weights=none", "--set", "device=cpu", "--set", "epochs=1"]
    assert main(argv) == 1
    line = one_line_error(capsys)
    assert f"{images}: {expected}" in line
    assert "rebuild it with `snakemake --forcerun render_images`" in line
    assert not out.exists() or not any(out.iterdir())


def test_a_damaged_mapping_names_the_command_that_rebuilds_it(tmp_path, capsys):
    emb = write_embeddings(tmp_path / "e.h5")
    assert fit(emb, tmp_path / "m.h5") == 0
    _flip_one_value(tmp_path / "m.h5", "coords")
    out = tmp_path / "i.h5"
    argv = ["render-images", "--embeddings", str(emb), "--mapping", str(tmp_path / "m.h5")]
    assert main([*argv, "--out", str(out)]) == 1
    line = one_line_error(capsys)
    assert "m.h5: is corrupted or was modified" in line
    assert "`snakemake --forcerun fit_mapping`" in line and not out.exists()


def test_rendered_images_carry_a_checksum_that_verifies(tmp_path):
    from textvision.core.io import verify_sealed

    emb = write_embeddings(tmp_path / "e.h5")
    assert fit(emb, tmp_path / "m.h5") == 0
    argv = ["render-images", "--embeddings", str(emb), "--mapping", str(tmp_path / "m.h5")]
    assert main([*argv, "--out", str(tmp_path / "i.h5")]) == 0
    verify_sealed(tmp_path / "i.h5", "render_images")
    verify_sealed(tmp_path / "m.h5", "fit_mapping")


def test_the_lock_names_its_live_holder_and_clears_a_dead_one(tmp_path):
    out = tmp_path / "results"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = out / LOCK_NAME
        out.mkdir()
        record = {"host": socket.gethostname(), "pid": holder.pid, "cwd": "/elsewhere"}
        lock.write_text(json.dumps({**record, "started": "2026-01-01T00:00:00"}))
        with pytest.raises(InputError, match=f"pid {holder.pid} on host .*/elsewhere"):
            acquire_outdir(out)
        lock.write_text(json.dumps({**record, "host": "another-node"}))
        with pytest.raises(InputError, match="on host another-node"):
            acquire_outdir(out)  # another host's run cannot be checked: never taken over
    finally:
        holder.kill()
        holder.wait()
    lock.write_text(json.dumps({**record, "started": "2026-01-01T00:00:00"}))  # holder died
    assert acquire_outdir(out) == lock.resolve()
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert acquire_outdir(out) == lock.resolve()  # the holder itself may take it again
    release_outdir(out)
    assert not lock.exists()


@pytest.mark.slow
def test_a_second_run_into_the_same_outdir_stops_before_any_job(tmp_path):
    """Two working directories, one absolute outdir: the second run is refused while the
    first holds the lock; the message reaches the terminal."""
    shared = tmp_path / "shared-results"
    config = tmp_path / "c.yaml"
    config.write_text(f"outdir: {shared}\ndata: {{synthetic: {{n_per_class: 10}}}}\n")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        shared.mkdir()
        (shared / LOCK_NAME).write_text(
            json.dumps({"host": socket.gethostname(), "pid": holder.pid, "cwd": "/first/run"})
        )
        (tmp_path / "second").mkdir()
        proc = subprocess.run(
            snakemake_command(tmp_path / "second", config, "--until", "prepare_data", cores=1),
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0
    assert f"pid {holder.pid}" in proc.stderr and "/first/run" in proc.stderr
    assert sorted(p.name for p in shared.iterdir()) == [LOCK_NAME]  # no job ran


@pytest.mark.slow
def test_a_failed_steps_message_reaches_the_terminal(tmp_path):
    source = tmp_path / "one_class.csv"
    source.write_text("text,label\na,0\nb,0\nc,0\n")
    (tmp_path / "c.yaml").write_text(f"outdir: out\ndata: {{source: {source}}}\n")
    proc = subprocess.run(
        snakemake_command(tmp_path, tmp_path / "c.yaml", cores=1),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "textvision prepare-data: error:" in proc.stdout + proc.stderr
    assert "single class" in proc.stdout + proc.stderr
    assert not (tmp_path / "out" / LOCK_NAME).exists()  # released on error


def test_no_refusal_recommends_an_unsafe_option():
    unsafe = ("weights_only=False", "--force ", "--forceall", "--unlock", "--nolock")
    hits = []
    for path in (REPO / "src/textvision").glob("*.py"):
        text = path.read_text()
        hits += [f"{path.name}: {u}" for u in unsafe if u in text]
    assert hits == []
