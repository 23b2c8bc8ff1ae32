"""One declaration per setting: typed step settings from the schema, rule fragments, the CLI's
--config/--settings/--set, help from the schema, the registry as the one list of backbones,
one thread count per step, errors that keep their cause."""

import functools
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml
from conftest import REPO, write_images
from test_reliability import write_embeddings

from textvision.cli import STEPS, build_parser, main, resolve_settings
from textvision.config.schema import prepare_config, schema_default
from textvision.config.settings import (
    DataSettings,
    EmbedSettings,
    ExplainSettings,
    MappingSettings,
    PredictSettings,
    TrainSettings,
    build_settings,
    step_params,
)
from textvision.core.backbones import REGISTRY, backbone_names, register_backbone
from textvision.core.errors import ConfigError, InputError
from textvision.core.io import atomic_path
from textvision.core.registry import DOMAIN_INPUTS, register_domain_input, unique
from textvision.core.threads import share, thread_counts

PAPER = yaml.safe_load((REPO / "config/paper.yaml").read_text())


def args_of(*argv: str) -> dict:
    return vars(build_parser().parse_args(argv))


def test_rule_fragment_rebuilds_the_same_settings():
    config = prepare_config(PAPER, base_dir=REPO)
    for cls in (DataSettings, EmbedSettings, MappingSettings):
        fragment = json.loads(step_params(cls, config))
        assert build_settings(cls, fragment) == cls.from_config(config)
    fragment = json.loads(step_params(TrainSettings, config, backbone="vgg16"))
    settings = build_settings(TrainSettings, fragment, backbone="vgg16")
    assert settings == TrainSettings.from_config(config, backbone="vgg16")
    assert (settings.lr_head, settings.lr_classifier) == (5e-5, 1e-3)


def test_another_backbones_learning_rate_leaves_a_train_fragment_alone():
    config = prepare_config(PAPER, base_dir=REPO)
    changed = prepare_config(
        {**PAPER, "training": {**PAPER["training"], "lr": {"vgg16": {"head": 1e-3}}}},
        base_dir=REPO,
    )
    assert step_params(TrainSettings, config, backbone="alexnet") == step_params(
        TrainSettings, changed, backbone="alexnet"
    )
    assert step_params(TrainSettings, config, backbone="vgg16") != step_params(
        TrainSettings, changed, backbone="vgg16"
    )


def test_explain_and_predict_take_settings_like_every_step():
    """Their rules pass a fragment of the step's keys only (choosing models or texts reruns
    nothing), the options typed by hand (`--steps 4`) are `--set`s, and the defaults are the
    schema's."""
    config = prepare_config({"explain": {"steps": 4, "models": ["alexnet"]}, "device": "cpu"})
    fragment = step_params(ExplainSettings, config)
    assert json.loads(fragment) == {
        "explain": {"steps": 4, "n_texts": 8, "seed": 0, "references": 8}, "device": "cpu",
    }  # fmt: skip
    other = {**config, "explain": {**config["explain"], "enabled": True, "models": []}}
    assert step_params(ExplainSettings, other) == fragment
    base = ["explain", "--model", "m", "--out", "o", "--dataset", "d"]
    typed = resolve_settings(STEPS["explain"], args_of(*base, "--steps", "4", "--device", "cpu"))
    assert typed == resolve_settings(STEPS["explain"], args_of(*base, "--settings", fragment))
    assert typed == ExplainSettings.make(steps=4, device="cpu")
    assert ExplainSettings.make().references == schema_default("explain.references") == 8
    predict = ["predict", "--model", "m", "--out", "o", "--input", "t.csv", "--batch-size", "4"]
    assert resolve_settings(STEPS["predict"], args_of(*predict)) == PredictSettings.make(
        batch_size=4
    )


def test_config_file_then_settings_then_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"deepinsight": {"pixels": 8, "tsne": {"perplexity": 4}}}))
    args = args_of(
        "fit-mapping", "--embeddings", "e", "--out", "o", "--config", str(path),
        "--settings", json.dumps({"deepinsight": {"pixels": 9}}), "--set", "tsne.perplexity=7",
    )  # fmt: skip
    settings = resolve_settings(STEPS["fit-mapping"], args)
    assert settings.pixels == 9 and settings.tsne.perplexity == 7
    assert settings.tsne.max_iter == 1000  # the schema's default


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "tsne.perplexity=-3"], "config key 'deepinsight.tsne.perplexity'"),
        (["--set", "no_such_key=1"], "config key 'deepinsight.no_such_key': no such key"),
        (["--set", "pixels"], "--set 'pixels': expected KEY=VALUE"),
        (["--settings", "{not json"], "--settings: not valid JSON"),
        (["--config", "/no/such.yaml"], "/no/such.yaml: cannot read config file"),
    ],
)
def test_bad_settings_name_the_key_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "m.h5"
    assert main(["fit-mapping", "--embeddings", "e.h5", "--out", str(out), *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_help_lists_every_setting_with_default_and_description(capsys):
    with pytest.raises(SystemExit):
        main(["fit-mapping", "--help"])
    text = capsys.readouterr().out
    assert "tsne.perplexity = 30" in text and "t-SNE perplexity" in text
    for key in MappingSettings.setting_keys():
        assert key.removeprefix("deepinsight.") in text, key


def test_argparse_holds_no_setting_defaults():
    for action in build_parser()._subparsers._group_actions[0].choices["train"]._actions:
        assert action.dest in {"help", "images", "outdir", "backbone", "seed", "mapping",
                               "config", "settings", "assignments"}, action.dest  # fmt: skip


def test_registry_is_the_one_list_and_refuses_duplicates():
    with pytest.raises(ValueError, match="registered already"):
        register_backbone("alexnet", ("features",), 192, stop=5)
    assert set(REGISTRY) <= set(backbone_names())
    for name, spec in REGISTRY.items():  # every entry carries its learning rates
        assert spec.lr_head > 0 and spec.lr_classifier > 0, name
    with pytest.raises(ConfigError, match="'training.backbones.0'"):
        prepare_config({"training": {"backbones": ["lenet@layer1"]}})


def test_the_names_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="registered twice"):
        unique("accuracy", "costs", "accuracy")
    with pytest.raises(ValueError, match="registered already"):
        register_domain_input("raw", "text", "#000000", "again")
    assert DOMAIN_INPUTS["raw"].description == "text images as rendered, no normalisation"


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    argv = ["fit-mapping", "--embeddings", str(tmp_path / "absent.h5"), "--out", "m.h5"]
    assert main(argv) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--debug", *argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "FileNotFoundError" in err  # the cause is kept
    monkeypatch.setenv("TEXTVISION_DEBUG", "1")
    assert main(argv) == 1 and "Traceback" in capsys.readouterr().err


def test_imagenet_loader_reports_the_download_error(tmp_path, monkeypatch):
    import torch
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def refuse(self, *args, **kwargs):
        raise ConnectionError("network unreachable (test)")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", refuse)
    from textvision.models.network import imagenet_state_dict

    with pytest.raises(InputError, match="ConnectionError: network unreachable") as err:
        imagenet_state_dict("alexnet")
    assert isinstance(err.value.__cause__, ConnectionError)


def test_temporaries_of_live_or_remote_writers_are_kept(tmp_path):
    target = tmp_path / "x.h5"
    here = socket.gethostname()
    dead = tmp_path / f".x.h5.tmp-{here}-999999999"
    live = tmp_path / f".x.h5.tmp-{here}-{os.getppid()}"
    remote = tmp_path / ".x.h5.tmp-node-17.cluster-4242"
    old_remote = tmp_path / ".x.h5.tmp-node-18.cluster-4242"
    for path in (dead, live, remote, old_remote):
        path.write_bytes(b"partial")
    week = time.time() - 7 * 24 * 3600
    os.utime(old_remote, (week, week))
    with atomic_path(target) as tmp:
        assert tmp.name == f".x.h5.tmp-{here}-{os.getpid()}"
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done"
    assert not dead.exists() and not old_remote.exists()
    assert live.exists() and remote.exists()


def _record_threads(monkeypatch, module, function, seen):
    real = getattr(module, function)

    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        seen.append({**thread_counts(), "passed": kwargs.get("threads")})
        return real(*args, **kwargs)

    monkeypatch.setattr(module, function, wrapper)


def test_every_step_runs_on_the_thread_count_it_is_given(tmp_path, monkeypatch):
    import numba

    from textvision.deepinsight import fit as mapping
    from textvision.deepinsight import render
    from textvision.train import baseline
    from textvision.train import step as train

    emb = write_embeddings(tmp_path / "e.h5", n=60, hidden=32)
    images = write_images(tmp_path / "i.h5")
    seen = []
    for module, function in (
        (mapping, "fit_mapping"),
        (render, "render_images"),
        (train, "_train"),  # inside the training job's own thread setting
        (baseline, "train_logreg"),
    ):
        _record_threads(monkeypatch, module, function, seen)
    numba.set_num_threads(2 if numba.config.NUMBA_NUM_THREADS > 1 else 1)
    one = ["--threads", "1"]
    m = str(tmp_path / "m.h5")
    assert (
        main(["fit-mapping", "--embeddings", str(emb), "--out", m, "--set", "pixels=8", *one]) == 0
    )
    assert main(["render-images", "--embeddings", str(emb), "--mapping", m,
                 "--out", str(tmp_path / "r.h5"), *one]) == 0  # fmt: skip
    assert main(["train", "--images", str(images), "--outdir", str(tmp_path / "t"),
                 "--backbone", "alexnet", "--seed", "0", "--set", "epochs=1",
                 "--set", "weights=none", "--set", "device=cpu",
                 "--set", "threads=1"]) == 0  # fmt: skip
    assert (
        main(["baseline", "--embeddings", str(emb), "--out", str(tmp_path / "b.json"), *one]) == 0
    )
    # fit and render run their own thread pools: they are handed the count too
    assert [counts.pop("passed") for counts in seen] == [1, 1, None, None]
    for counts in seen:
        assert set(counts.values()) == {1}, counts
    assert thread_counts().get("numba") != 1 or numba.config.NUMBA_NUM_THREADS == 1  # restored


def test_shared_items_go_to_the_free_thread_once_each():
    """A thread held up takes fewer items; every item is taken exactly once; an error in a
    thread reaches the caller."""
    taken, release = {}, threading.Event()

    def work(take):
        name = threading.current_thread().name
        while (item := take()) is not None:
            taken.setdefault(name, []).append(item)
            if item == 0:  # the first item's thread is held until the others are done
                release.wait(timeout=10)
            elif item == 99:
                release.set()

    share(range(100), 2, work)
    assert sorted(i for items in taken.values() for i in items) == list(range(100))
    assert sorted(len(items) for items in taken.values()) == [1, 99]

    def fail(take):
        take()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        share(range(4), 2, fail)


@pytest.mark.skipif(os.cpu_count() < 2, reason="needs 2 cores to tell 1 thread from 2")
def test_one_thread_fit_uses_one_core(tmp_path):
    """CPU time / wall time of a real fit-mapping process (the parallel numba t-SNE) with
    --threads 1: one core busy, not two."""
    cls = np.random.default_rng(0).normal(size=(200, 6, 200)).astype(np.float32)
    emb = write_embeddings(tmp_path / "e.h5", n=200, cls=cls)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tic = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "textvision.cli", "fit-mapping", "--embeddings", str(emb),
         "--out", str(tmp_path / "m.h5"), "--set", "tsne.perplexity=30", "--threads", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu / wall < 1.3, (cpu, wall)


def test_cli_modules_import_no_heavy_library():
    code = (
        "import sys, textvision.cli, textvision.config.settings;"
        "print(sorted(m for m in ('torch', 'numba', 'sklearn', 'transformers')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
