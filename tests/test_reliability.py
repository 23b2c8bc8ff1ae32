"""Bad input, atomic outputs, interrupted runs, safety by construction, flat memory."""

import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch
from conftest import ENV, REPO, run_snakemake, write_config, write_images

from bench.common import snakemake_command
from textvision.cli import main
from textvision.config.settings import DataSettings, EmbedSettings
from textvision.core.io import set_attrs, string_array
from textvision.data.prepare import prepare_dataset
from textvision.embed import step as embed


def write_embeddings(path, n=40, layers=2, hidden=16, seed=0, cls=None):
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as fh:
        fh["cls"] = rng.normal(size=(n, layers, hidden)).astype(np.float32) if cls is None else cls
        fh["label"] = np.arange(n) % 2
        fh["split"] = string_array(np.where(np.arange(n) % 5 == 0, "val", "train"))
        fh["id"] = string_array(range(n))
        set_attrs(
            fh,
            {
                "layers": list(range(1, layers + 1)),
                "model": "test",
                "label_names": ["a", "b"],
                "synthetic": True,
            },
        )
    return path


def train_args(images, out, backbone, *extra) -> list[str]:
    """`textvision train` arguments, random weights, learning rates 1e-3."""
    return [
        "train",
        *("--images", str(images), "--outdir", str(out), "--backbone", backbone),
        *("--seed", "0", "--set", "weights=none", "--set", f"lr.{backbone}.head=1e-3"),
        *("--set", f"lr.{backbone}.classifier=1e-3"),
        *extra,
    ]


def fit(emb, out, *extra):
    return main(
        [
            "fit-mapping",
            "--embeddings",
            str(emb),
            "--out",
            str(out),
            "--set",
            "projector=pca",
            "--set",
            "pixels=8",
            *extra,
        ]
    )


def test_embeddings_with_wrong_shape_are_refused(tmp_path, capsys):
    emb = write_embeddings(tmp_path / "e.h5", cls=np.zeros((40, 32), np.float32))
    assert fit(emb, tmp_path / "m.h5") == 1
    assert (
        "e.h5: dataset 'cls' has shape (40, 32); expected [N, layers, hidden]"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "m.h5").exists()


def test_embeddings_with_nan_or_inf_are_refused(tmp_path, capsys):
    for bad in (np.nan, np.inf):
        cls = np.random.default_rng(0).normal(size=(40, 2, 16)).astype(np.float32)
        cls[3, 1, 5] = bad
        emb = write_embeddings(tmp_path / "e.h5", cls=cls)
        assert fit(emb, tmp_path / "m.h5") == 1
        assert "dataset 'cls' holds NaN or inf values" in capsys.readouterr().err
        assert not (tmp_path / "m.h5").exists()


def test_embeddings_disagreeing_with_the_mapping_are_refused(tmp_path, capsys):
    assert fit(write_embeddings(tmp_path / "e.h5"), tmp_path / "m.h5") == 0
    other = write_embeddings(tmp_path / "other.h5", hidden=20)
    out = tmp_path / "images.h5"
    assert (
        main(
            [
                "render-images",
                "--embeddings",
                str(other),
                "--mapping",
                str(tmp_path / "m.h5"),
                "--out",
                str(out),
            ]
        )
        == 1
    )
    assert "40 features per row; the mapping" in capsys.readouterr().err
    assert not out.exists()


def test_missing_and_foreign_hdf5_files(tmp_path, capsys):
    assert fit(tmp_path / "absent.h5", tmp_path / "m.h5") == 1
    assert "absent.h5: file not found" in capsys.readouterr().err
    (tmp_path / "text.h5").write_text("not hdf5")
    assert fit(tmp_path / "text.h5", tmp_path / "m.h5") == 1
    assert "text.h5: not a readable HDF5 file" in capsys.readouterr().err
    with h5py.File(tmp_path / "nocls.h5", "w") as fh:
        fh["x"] = [1]
    assert fit(tmp_path / "nocls.h5", tmp_path / "m.h5") == 1
    assert "missing dataset(s) ['cls', 'split']" in capsys.readouterr().err
    assert not (tmp_path / "m.h5").exists()


@pytest.mark.parametrize("case", ["lacking tensor", "pickled object", "pixel mismatch"])
def test_training_bad_inputs_leave_no_output(tmp_path, capsys, case):
    images = write_images(tmp_path / "images.h5")
    weights = "none"
    if case == "lacking tensor":
        weights = str(tmp_path / "w.pt")
        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, weights)
    elif case == "pickled object":
        weights = str(tmp_path / "w.pt")
        with open(weights, "wb") as fh:
            fh.write(
                b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system"
                b"\x94\x93\x94\x8c\x07touch x\x94\x85\x94R\x94."
            )
    else:
        with h5py.File(images, "a") as fh:
            fh.attrs["pixels"] = 12
    out = tmp_path / "train"
    rc = main(
        train_args(images, out, "resnet18", "--set", f"weights={weights}", "--set", "epochs=1")
    )
    assert rc == 1
    err = capsys.readouterr().err
    expected = {
        "lacking tensor": "w.pt: lacks",
        "pickled object": "w.pt: not a loadable state_dict",
        "pixel mismatch": "images.h5: dataset 'images' has shape",
    }[case]
    assert expected in err
    assert not (out / "metrics.json").exists() and not (out / "model.pt").exists()
    assert not (tmp_path / "x").exists() and not (REPO / "x").exists()  # pickle never executed


def test_a_step_failing_mid_write_leaves_nothing(tmp_path, monkeypatch):
    prepare_dataset(tmp_path / "d.parquet", DataSettings.make(synthetic={"n_per_class": 10}))
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    real = embed.embed_texts
    monkeypatch.setattr(embed, "embed_texts", failing)
    monkeypatch.setattr(embed, "CHUNK", 8)  # several chunks: the file is half-written when it fails
    out = tmp_path / "emb" / "shard.h5"
    with pytest.raises(RuntimeError):
        embed.embed_dataset(
            tmp_path / "d.parquet", out, EmbedSettings.make(layers=1, max_length=32)
        )
    assert len(calls) == 2 and os.listdir(out.parent) == []


def test_rule_shell_commands_quote_every_value():
    for smk in (REPO / "workflow/rules").glob("*.smk"):
        for field in re.findall(
            r"\{((?:params|input|output|log|wildcards)[^}]*)\}", smk.read_text()
        ):
            assert field.endswith(":q"), f"{smk.name}: {{{field}}} is not shell-quoted"


def test_config_cannot_write_outside_outdir():
    from textvision.config.schema import load_schema, prepare_config
    from textvision.core.errors import ConfigError

    schema = load_schema()
    for bad in (
        {"outdir": "../elsewhere"},
        {"training": {"backbones": ["../../etc"]}},
        {"training": {"backbones": ["alexnet/../../x"]}},
    ):
        with pytest.raises(ConfigError):
            prepare_config(bad, schema, REPO)


def _kill_when(select, timeout=240):
    """SIGKILL the first Python process for which `select(command_line, cwd)` holds (never the
    shell around it, whose death would leave the Python child running)."""
    import psutil

    deadline = time.time() + timeout
    while time.time() < deadline:
        for proc in psutil.process_iter(["cmdline", "cwd"]):
            argv = proc.info["cmdline"] or [""]
            if "python" in argv[0] and select(" ".join(argv), proc.info["cwd"]):
                proc.send_signal(signal.SIGKILL)
                return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_killed_embedding_resumes_without_recomputing_finished_shards(tmp_path):
    overrides = {"data": {"synthetic": {"n_per_class": 60}}, "embedding": {"shards": 3}}
    ref, work = tmp_path / "ref", tmp_path / "work"
    for d in (ref, work):
        write_config(d, overrides)
    # one core everywhere: every job embeds with one thread, so the numbers are comparable bit
    # for bit (reductions split over more threads round differently)
    run_snakemake(ref, "--until", "merge_embeddings", cores=1)
    shards = work / "out/embeddings/shards"
    proc = subprocess.Popen(
        snakemake_command(work, work / "config.yaml", "--until", "merge_embeddings", cores=1),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=ENV,
    )

    def second_shard_writing(cmdline, cwd):
        # the embedding job of a second shard, caught while it writes its temporary file
        match = re.search(r"textvision embed .*--shard '?(\d)", cmdline)
        return (
            cwd == str(work)
            and match is not None
            and len(list(shards.glob("shard*"))) == 1
            and not (shards / f"shard{match.group(1)}-of3.h5").exists()
            and any(shards.glob(f".shard{match.group(1)}-of3.h5.tmp-*"))
        )

    killed = _kill_when(second_shard_writing)
    assert proc.wait(timeout=300) != 0 and killed
    done = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard*-of3.h5")}
    assert len(done) == 1 and not (work / "out/embeddings/embeddings.h5").exists()
    assert list(shards.glob(".shard*.tmp-*"))  # the killed writer's temporary, never finished
    log = run_snakemake(work, "--until", "merge_embeddings", cores=1)
    assert {p.name: p.stat().st_mtime_ns for p in shards.glob("shard*")}.items() >= done.items()
    assert log.stderr.count("rule embed_shard:") == 2  # only the two unfinished shards ran
    assert not list(shards.glob(".shard*.tmp-*"))  # and cleared the stale temporary
    with (
        h5py.File(ref / "out/embeddings/embeddings.h5") as a,
        h5py.File(work / "out/embeddings/embeddings.h5") as b,
    ):
        assert np.array_equal(a["cls"][:], b["cls"][:])


@pytest.mark.slow
def test_killed_training_resumes_from_its_checkpoint(tmp_path):
    images = write_images(tmp_path / "images.h5", n=160)
    out = tmp_path / "train"
    cmd = [sys.executable, "-m", "textvision.cli"] + train_args(
        images,
        out,
        "alexnet",
        *("--set", "epochs=6", "--set", "batch_size=8"),
        *("--set", "device=cpu", "--set", "upsample=3"),
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    checkpoint = out / "checkpoint.pt"
    assert _kill_when(
        lambda cmd, cwd: (
            cwd == str(tmp_path) and "textvision.cli train" in cmd and checkpoint.exists()
        )
    )
    proc.wait(timeout=60)
    assert checkpoint.exists() and not (out / "metrics.json").exists()
    done = len(torch.load(checkpoint, weights_only=True)["history"])
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming alexnet seed 0 from epoch {done}" in rerun.stderr
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, 7))
    assert not checkpoint.exists()


def _peak_rss_mb(code: str) -> float:
    """Peak resident memory of a fresh interpreter running `code` (VmHWM: reset at exec, unlike
    ru_maxrss, which a forked child inherits from this big test process)."""
    probe = "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    proc = subprocess.run(
        [sys.executable, "-c", f"{code}\n{probe}"], capture_output=True, text=True, check=True
    )
    return int(proc.stdout.split()[-1]) / 1024


@pytest.mark.slow
def test_rendering_memory_stays_flat_as_n_grows(tmp_path):
    write_embeddings(tmp_path / "fit.h5", n=200, layers=2, hidden=384)
    assert (
        main(
            [
                "fit-mapping",
                "--embeddings",
                str(tmp_path / "fit.h5"),
                "--out",
                str(tmp_path / "m.h5"),
                "--set",
                "projector=pca",
                "--set",
                "pixels=50",
            ]
        )
        == 0
    )
    peaks = {}
    for n in (4096, 8 * 4096):
        cls = np.random.default_rng(1).normal(size=(n, 2, 384)).astype(np.float32)
        write_embeddings(tmp_path / f"e{n}.h5", n=n, cls=cls)
        peaks[n] = _peak_rss_mb(
            "from textvision.deepinsight.render import render_images\n"
            f"render_images('{tmp_path}/e{n}.h5', '{tmp_path}/m.h5', '{tmp_path}/i{n}.h5')"
        )
    # 8x the rows: 28,672 more images (287 MB) and inputs (88 MB) must not be held at once
    assert peaks[8 * 4096] - peaks[4096] < 25, peaks
