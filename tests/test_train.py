import json

import h5py
import pytest
import torch
from conftest import train_job, write_images

from textvision.core.device import native_bf16
from textvision.core.errors import ConfigError, InputError

METRIC_FIELDS = {
    "val_accuracy_last",
    "val_accuracy_best",
    "best_epoch",
    "val_last",
    "val_best",
    "history",
    "train_seconds",
    "images_per_second",
    "weights",
    "backbone",
    "lr_head",
    "lr_classifier",
    "feature_maps",
    "seed",
    "device",
}
SCORE_FIELDS = {"accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "confusion_matrix"}


@pytest.fixture
def images(tmp_path):
    return write_images(tmp_path / "images.h5")


def test_training_lowers_the_loss_and_writes_every_output(images, tmp_path):
    metrics = train_job(images, tmp_path / "a")
    history = metrics["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert metrics["val_accuracy_best"] > 0.7
    saved = json.loads((tmp_path / "a/metrics.json").read_text())
    assert saved.keys() >= METRIC_FIELDS
    assert saved["val_last"].keys() >= SCORE_FIELDS and saved["val_best"].keys() >= SCORE_FIELDS
    assert saved["weights"] == "none" and saved["feature_maps"] == 192
    for name in ("model.pt", "history.csv", "learning_curve.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    assert not (tmp_path / "a/checkpoint.pt").exists()
    model = torch.load(tmp_path / "a/model.pt", weights_only=True)
    assert model["settings"]["backbone"] == "alexnet" and "head" in model["best"]


def test_same_seed_same_metrics_other_seed_differs(images, tmp_path):
    a = train_job(images, tmp_path / "a", epochs=2)
    b = train_job(images, tmp_path / "b", epochs=2)
    c = train_job(images, tmp_path / "c", epochs=2, seed=1)
    strip = lambda m: [{k: v for k, v in h.items() if k != "seconds"} for h in m["history"]]  # noqa: E731
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def test_three_classes_and_per_batch_normalisation(tmp_path):
    path = write_images(tmp_path / "i3.h5", n=120, classes=3)
    metrics = train_job(
        path,
        tmp_path / "m",
        epochs=2,
        normalization="batch",
        backbone="shufflenet_v2_x1_0",
        upsample=4,
    )
    assert len(metrics["val_last"]["confusion_matrix"]) == 3
    assert metrics["feature_cache"] is False  # per-batch statistics cannot be cached


def test_images_disagreeing_with_the_mapping_are_refused(images, tmp_path):
    with h5py.File(images, "a") as fh:
        fh.attrs["pixels"] = 20
    with pytest.raises(InputError, match="expected \\[N, 20, 20\\]"):
        train_job(images, tmp_path / "x")
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_too_small_images_explain_which_key_to_raise(images, tmp_path):
    with pytest.raises(InputError, match="deepinsight.pixels or training.upsample"):
        train_job(images, tmp_path / "x", upsample=1)


def test_per_pixel_normalisation_uses_the_training_maps(images, tmp_path):
    metrics = train_job(images, tmp_path / "p", epochs=2, normalization="pixel")
    assert metrics["normalization"] == "pixel" and metrics["feature_cache"] is True
    with h5py.File(images, "a") as fh:
        del fh["pixel_mean"]
    with pytest.raises(InputError, match="no 'pixel_mean'"):
        train_job(images, tmp_path / "q", normalization="pixel")


def test_a_checkpoint_resumes_only_with_the_same_weights_file(
    images, tmp_path, monkeypatch, caplog
):
    import logging

    import torchvision

    from textvision.train import step as train

    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    out = tmp_path / "r"

    def killed(*args, **kwargs):
        raise RuntimeError("killed after the epochs")

    def run_resnet(**kw):
        return train_job(images, out, backbone="resnet18", weights=str(weights), epochs=2, **kw)

    monkeypatch.setattr(train, "final_metrics", killed)
    with pytest.raises(RuntimeError):
        run_resnet()
    assert (out / "checkpoint.pt").exists()
    with pytest.raises(RuntimeError), caplog.at_level(logging.INFO, logger="textvision.train.step"):
        run_resnet()  # same weights: resumes after the last epoch
    assert "resuming resnet18 seed 0 from epoch 2" in caplog.text
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18().state_dict(), weights)  # replaced in between
    monkeypatch.undo()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="textvision.train.step"):
        metrics = run_resnet()
    assert "was written with other weights: starting afresh" in caplog.text
    assert "resuming" not in caplog.text
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]


def test_a_last_training_batch_of_one_row_is_trained_with_the_one_before(tmp_path):
    """81 training rows in batches of 16: BatchNorm cannot train on a batch of one."""
    path = write_images(tmp_path / "i.h5", n=102)
    metrics = train_job(path, tmp_path / "a", epochs=1)
    assert metrics["n_train"] == 81 and len(metrics["history"]) == 1


def test_auto_precision_on_a_cpu_is_float32_bit_for_bit(images, tmp_path):
    auto = train_job(images, tmp_path / "auto", epochs=2)
    fp32 = train_job(images, tmp_path / "fp32", epochs=2, precision="float32")
    assert auto["precision"] == fp32["precision"] == "float32"
    strip = lambda m: [{k: v for k, v in h.items() if k != "seconds"} for h in m["history"]]  # noqa: E731
    assert strip(auto) == strip(fp32)


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bfloat16 (AMX, AVX-512-BF16)")
def test_bfloat16_training_tracks_float32(images, tmp_path):
    """Same seed, same batches: bfloat16 autocast's training losses stay within 0.05 of
    float32's, its validation accuracy within 0.1 every epoch."""
    fp32 = train_job(images, tmp_path / "fp32", precision="float32")
    bf16 = train_job(images, tmp_path / "bf16", precision="bfloat16")
    assert bf16["precision"] == "bfloat16"
    for a, b in zip(fp32["history"], bf16["history"], strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 0.05, (a, b)
        assert abs(a["val_accuracy"] - b["val_accuracy"]) <= 0.1, (a, b)
    saved = json.loads((tmp_path / "bf16/metrics.json").read_text())
    assert saved["precision"] == "bfloat16"


def test_bfloat16_is_refused_on_a_cpu_without_it(images, tmp_path, monkeypatch):
    import textvision.core.device

    monkeypatch.setattr(textvision.core.device, "native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="'training.precision': bfloat16 on this CPU"):
        train_job(images, tmp_path / "x", precision="bfloat16")
    assert not (tmp_path / "x/metrics.json").exists()


def _resnet_file(path):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    for m in model.modules():  # real-looking running statistics, which must not move
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), path)
    return {f"{k}": v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("trainable", ["none", "last", "all"])
def test_fine_tuning_trains_only_the_blocks_it_names(images, tmp_path, trainable):
    """`last` changes the weights of the slice's last block (`layer1` of the ResNet-18 cut)
    and leaves the rest bit-identical; `all` changes the stem too; `none` changes nothing in the
    slice and computes its outputs once. Running statistics never move."""
    loaded = _resnet_file(tmp_path / "w.pt")
    metrics = train_job(images, tmp_path / trainable, backbone="resnet18@layer1",
                        weights=str(tmp_path / "w.pt"), epochs=2, upsample=2,
                        trainable=trainable, trainable_lr=1e-3)  # fmt: skip
    assert metrics["trainable"] == trainable and metrics["feature_cache"] == (trainable == "none")
    saved = torch.load(tmp_path / trainable / "model.pt", weights_only=True)
    if trainable == "none":
        assert "backbone" not in saved["best"]
        return
    body = saved["best"]["backbone"]
    modules = {"0": "conv1", "1": "bn1", "2": "relu", "3": "maxpool", "4": "layer1"}
    changed = set()
    for key, value in body.items():
        index, rest = key.split(".", 1)
        original = loaded[f"{modules[index]}.{rest}"]
        if "running" in key or "num_batches" in key:
            assert torch.equal(value, original), key  # frozen statistics
        elif not torch.equal(value, original):
            changed.add(modules[index])
    assert changed == ({"layer1"} if trainable == "last" else {"conv1", "bn1", "layer1"})


def test_the_fine_tuning_keys_reach_a_job_only_when_the_slice_trains():
    from textvision.config.schema import prepare_config
    from textvision.config.settings import TrainSettings

    frozen = prepare_config({"training": {"trainable_lr": 1e-3}})
    section = TrainSettings.fragment(frozen, backbone="alexnet")["training"]
    assert not {"trainable", "trainable_lr"} & set(section)  # nothing to rerun
    tuned = prepare_config({"training": {"trainable": "last"}})
    section = TrainSettings.fragment(tuned, backbone="alexnet")["training"]
    assert section["trainable"] == "last" and section["trainable_lr"] == 1e-5


def test_model_pt_keeps_the_last_epoch_apart_from_the_best(images, tmp_path):
    metrics = train_job(images, tmp_path / "a", epochs=4)
    saved = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    assert saved["best"]["epoch"] == metrics["best_epoch"] < 4  # this seed's best is not the last
    assert any(
        not torch.equal(saved["last"]["head"][k], saved["best"]["head"][k])
        for k in saved["best"]["head"]
    )
