"""The domain-shift step and BatchNorm adaptation: distances checked against closed forms, the
step's JSON and figures, AdaBN's statistics and frozen weights, folded BatchNorm refused."""

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import (
    RESNET18,
    SHARED,
    TINY,
    needs_resnet18,
    run_snakemake,
    train_job,
    write_config,
    write_images,
)
from torch import nn

from textvision.cli import main
from textvision.config.schema import prepare_config
from textvision.config.settings import DomainSettings, step_params
from textvision.core.errors import ConfigError, InputError
from textvision.domain.figures import DOMAIN_FIGURES
from textvision.domain.reference import load_reference
from textvision.domain.statistics import (
    FOLDED,
    NO_BATCHNORM,
    RANDOM_INIT,
    RUNNING,
    batchnorm_divergence,
    frechet_distance,
    gaussian_kl,
    slice_statistics,
    trace_sqrt_product,
)
from textvision.domain.step import domain_shift
from textvision.models.network import (
    adapt_batchnorm,
    batchnorm_layers,
    build_backbone,
    has_initial_statistics,
)

VARIANTS = ("raw", "zscore", "pixel", "adapted")
PIXEL_VARIANTS = ("raw", "zscore", "pixel", "natural")
SUMMARY = {"mean", "std", "skew", "zero_fraction", "empty_fraction", "histogram"}


@pytest.fixture
def images(tmp_path):
    return write_images(tmp_path / "images.h5", n=60)


def resnet18_file(path, folded=False, seed=0, folded_var=1.0):
    """A full ResNet-18 state_dict whose BatchNorm layers hold running statistics and affine
    parameters (random, as if trained), or folded BatchNorm (weight 1, bias 0, running mean 0,
    running variance `folded_var`: 1, or 1 - eps as some exporters write it)."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, nn.BatchNorm2d):
                continue
            if folded:
                m.running_mean.zero_(), m.running_var.fill_(folded_var)
                m.weight.fill_(1), m.bias.zero_()
            else:
                m.running_mean.normal_(0, 0.3), m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
    torch.save(model.state_dict(), path)
    return path


def run_domain(images, tmp_path, backbone="shufflenet_v2_x1_0", **settings):
    values = dict(n_reference=8, max_images=30, weights="none", upsample=3, device="cpu")
    settings = DomainSettings.make(backbone=backbone, **{**values, **settings})
    out = tmp_path / "domain" / f"{backbone}.json"
    result = domain_shift(images, out, out.parent, settings, backbone=backbone)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    return result


# --- the distances --------------------------------------------------------------------------


def test_frechet_distance_is_zero_on_itself_and_the_squared_shift_for_equal_covariances():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3000, 6)) @ rng.normal(size=(6, 6))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    shifts = [0.1, 0.5, 1.0, 2.0]
    distances = []
    for size in shifts:
        delta = np.full(6, size)
        distances.append(frechet_distance(a, a + delta))  # same covariance exactly
        assert distances[-1] == pytest.approx((delta**2).sum(), rel=1e-6)
    assert distances == sorted(distances)
    # independent samples of N(0, I) and N(d, I): |d|² up to sampling noise
    b = rng.normal(size=(20000, 3))
    c = rng.normal(size=(20000, 3)) + [1.0, -2.0, 0.5]
    assert frechet_distance(b, c) == pytest.approx(5.25, rel=0.02)
    # equal means, scaled covariance: d (s1 - s2)²
    assert frechet_distance(b, 3 * b) == pytest.approx(3 * (1 - 3) ** 2, rel=0.02)


def test_trace_of_the_matrix_square_root_matches_scipy():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 8)), rng.normal(size=(30, 8))
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    assert trace_sqrt_product(s1, s2) == pytest.approx(np.trace(sqrtm(s1 @ s2)).real, rel=1e-6)


def identity_bn(mean, var) -> nn.Sequential:
    """Conv (identity) -> BatchNorm with the given running statistics: the BatchNorm's input is
    the slice's input."""
    channels = len(mean)
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
    bn = nn.BatchNorm2d(channels)
    bn.running_mean.copy_(torch.tensor(mean))
    bn.running_var.copy_(torch.tensor(var))
    return nn.Sequential(conv, bn).eval()


def test_batchnorm_divergence_is_zero_for_inputs_from_the_running_statistics():
    mean, var = [1.0, -2.0, 0.0], [4.0, 0.25, 1.0]
    body = identity_bn(mean, var)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, 16, 16, generator=gen)
    matching = x * torch.tensor(var).sqrt().view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    features, stats = slice_statistics(body, matching.split(64))
    assert features.shape == (400, 3)
    np.testing.assert_allclose(stats["1"][0], mean, atol=0.01)
    np.testing.assert_allclose(stats["1"][1], var, rtol=0.01)
    assert batchnorm_divergence(body, stats)["1"] == pytest.approx(0, abs=1e-4)
    shifted = matching + torch.tensor([2.0, 0.5, 1.0]).view(1, 3, 1, 1)
    kl = batchnorm_divergence(body, slice_statistics(body, shifted.split(64))[1])["1"]
    expected = np.mean([2.0**2 / 4.0, 0.5**2 / 0.25, 1.0]) / 2  # d² / (2 var) per channel
    assert kl > 0.1 and kl == pytest.approx(expected, rel=0.02)
    centre = torch.tensor(mean).view(1, 3, 1, 1)
    wide = 2 * (matching - matching.mean((0, 2, 3), keepdim=True)) + centre  # 4x the variance
    widened = slice_statistics(body, wide.split(64))[1]
    assert batchnorm_divergence(body, widened)["1"] == pytest.approx(
        float(gaussian_kl(0, 4, 0, 1)), rel=0.02
    )


# --- AdaBN ----------------------------------------------------------------------------------


def test_adapt_sets_the_running_statistics_to_the_images_and_keeps_every_weight(tmp_path):
    body = build_backbone("resnet18", str(resnet18_file(tmp_path / "w.pt"))).body
    before = copy.deepcopy(body.state_dict())
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(50, 3, 32, 32, generator=gen) * 3 + 1  # far from ImageNet's statistics
    assert adapt_batchnorm(body, x.split(16)) == 50  # batches of 16, 16, 16 and 2
    assert not body.training and not any(m.training for m in body.modules())
    with torch.no_grad():
        conv1 = body[0](x)
    bn1 = body[1]
    torch.testing.assert_close(bn1.running_mean, conv1.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn1.running_var, conv1.var((0, 2, 3)), rtol=0.05, atol=1e-4)
    assert not torch.allclose(before["1.running_mean"], bn1.running_mean)
    for name, value in body.state_dict().items():
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        assert torch.equal(value, before[name]), name  # conv weights, BN weight and bias
    for layer in batchnorm_layers(body).values():
        assert layer.momentum == 0.1  # restored


def test_training_with_adapt_adapts_once_and_never_changes_the_slice(images, tmp_path, monkeypatch):
    from textvision.train import step as train

    weights = resnet18_file(tmp_path / "w.pt")
    loaded = torch.load(weights, weights_only=True)
    seen = {}
    real_fit = train.fit_epochs

    def watched(job, run, checkpoint, identity):
        seen["before"] = copy.deepcopy(job.net.backbone.body.state_dict())
        out = real_fit(job, run, checkpoint, identity)
        seen["after"] = copy.deepcopy(job.net.backbone.body.state_dict())
        return out

    monkeypatch.setattr(train, "fit_epochs", watched)
    metrics = train_job(
        images, tmp_path / "t", backbone="resnet18", weights=str(weights), epochs=2,
        batchnorm="adapt",
    )  # fmt: skip
    assert metrics["batchnorm"] == "adapt"
    assert json.loads((tmp_path / "t/metrics.json").read_text())["batchnorm"] == "adapt"
    names = {"0": "conv1", "1": "bn1", "4": "layer1"}  # the slice's modules in the file
    for key, value in seen["before"].items():
        assert torch.equal(value, seen["after"][key]), key  # training never touches the slice
        module, _, rest = key.partition(".")
        original = loaded[f"{names[module]}.{rest}"]
        if key.endswith(("running_mean", "running_var")):
            assert not torch.equal(value, original), key  # re-estimated
        elif not key.endswith("num_batches_tracked"):
            assert torch.equal(value, original), key  # weights as loaded
    frozen = train_job(images, tmp_path / "f", backbone="resnet18", weights=str(weights))
    assert frozen["batchnorm"] == "frozen"


def test_adapt_refuses_folded_batchnorm_and_slices_without_it(images, tmp_path, capsys):
    folded = resnet18_file(tmp_path / "folded.pt", folded=True)
    with pytest.raises(InputError, match=r"resnet18 with weights .*folded.pt has folded"):
        train_job(images, tmp_path / "a", backbone="resnet18", weights=str(folded),
                     batchnorm="adapt")  # fmt: skip
    argv = ["train", "--images", str(images), "--outdir", str(tmp_path / "b"), "--backbone",
            "alexnet", "--seed", "0", "--set", "weights=none", "--set", "batchnorm=adapt",
            "--set", "device=cpu"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "alexnet (weights none) has no BatchNorm" in err, err
    assert not (tmp_path / "b/metrics.json").exists()


# --- the step ---------------------------------------------------------------------------------


def _check_result(result: dict, tmp_path, n_slices: int) -> None:
    assert result["reference"]["reference"] == "sklearn"
    assert result["reference"]["n_images"] == 8
    assert result["reference"]["photos"] == ["china.jpg", "flower.jpg"]
    assert result["text"]["n_images"] == 30 and result["text"]["n_train"] == 48
    assert result["input_size"] == 48
    for name in PIXEL_VARIANTS:
        level = result["pixel_level"][name]
        assert level.keys() >= SUMMARY, name
        assert all(np.isfinite(level[k]) for k in SUMMARY - {"histogram"}), name
        hist = level["histogram"]
        assert len(hist["edges"]) == len(hist["counts"]) + 1 and sum(hist["counts"]) > 0
    assert result["pixel_level"]["zscore"]["mean"] == pytest.approx(0, abs=0.3)
    assert result["pixel_level"]["natural"]["zero_fraction"] < 0.5
    assert len(result["slices"]) == n_slices
    for sl in result["slices"]:
        assert set(sl["variants"]) == set(VARIANTS)
        assert np.isfinite(sl["natural_halves_frechet"])
    assert set(result["figures"]) == set(DOMAIN_FIGURES)
    for name in result["figures"].values():
        assert (tmp_path / "domain" / name).read_bytes()[:4] == b"\x89PNG", name


def test_the_step_writes_every_number_and_figure_for_every_variant(images, tmp_path, capsys):
    out = tmp_path / "domain/shufflenet_v2_x1_0.json"
    argv = ["domain-shift", "--images", str(images), "--backbone", "shufflenet_v2_x1_0",
            "--out-json", str(out), "--outdir", str(out.parent), "--set", "n_reference=8",
            "--set", "max_images=30", "--set", "training.weights=none",
            "--set", "training.upsample=3", "--set", "device=cpu", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    _check_result(result, tmp_path, n_slices=1)
    (sl,) = result["slices"]
    assert sl["weights"] == "none" and sl["batchnorm"] == RANDOM_INIT
    for name in VARIANTS:
        frechet = sl["variants"][name]["frechet"]
        assert isinstance(frechet, float) and frechet >= 0, name
        assert sl["variants"][name]["frechet_relative"] >= 0, name
    assert all(sl["variants"][v]["bn_kl"] == RANDOM_INIT for v in ("raw", "zscore", "pixel"))
    adapted = sl["variants"]["adapted"]
    assert isinstance(adapted["bn_kl"], float) and adapted["bn_kl"] < 0.05  # ~0: own statistics
    assert len(adapted["bn_kl_layers"]) > 5


def test_real_running_statistics_give_divergences_and_a_random_reference_slice(images, tmp_path):
    weights = resnet18_file(tmp_path / "w.pt")
    result = run_domain(images, tmp_path, backbone="resnet18", weights=str(weights))
    _check_result(result, tmp_path, n_slices=2)
    trained, random = result["slices"]
    assert trained["weights"] == str(weights) and trained["batchnorm"] == RUNNING
    assert random["weights"] == "none" and random["batchnorm"] == RANDOM_INIT
    for name in VARIANTS:
        values = trained["variants"][name]
        assert values["frechet"] >= 0 and values["bn_kl"] > 0
        assert set(values["bn_kl_layers"]) == set(batchnorm_layers(build_backbone(
            "resnet18", "none").body))  # fmt: skip
        assert values["bn_kl"] == pytest.approx(np.mean(list(values["bn_kl_layers"].values())),
                                                rel=1e-4)  # fmt: skip
    assert trained["variants"]["adapted"]["bn_kl"] < trained["variants"]["zscore"]["bn_kl"]


def test_folded_and_absent_batchnorm_are_said_in_words(images, tmp_path):
    folded = resnet18_file(tmp_path / "folded.pt", folded=True, folded_var=1 - 1e-5)
    result = run_domain(images, tmp_path, backbone="resnet18", weights=str(folded))
    sl = result["slices"][0]
    assert sl["batchnorm"] == FOLDED
    assert all(sl["variants"][v]["bn_kl"] == FOLDED for v in VARIANTS)
    assert "nothing to adapt" in sl["variants"]["adapted"]["frechet"]
    assert all(isinstance(sl["variants"][v]["frechet"], float) for v in ("raw", "zscore", "pixel"))
    alexnet = run_domain(images, tmp_path, backbone="alexnet")["slices"][0]
    assert alexnet["batchnorm"] == NO_BATCHNORM
    assert all(alexnet["variants"][v]["bn_kl"] == NO_BATCHNORM for v in VARIANTS)
    assert isinstance(alexnet["variants"]["zscore"]["frechet"], float)


def test_the_same_settings_give_the_same_numbers(images, tmp_path):
    a = run_domain(images, tmp_path / "a", backbone="alexnet")
    b = run_domain(images, tmp_path / "b", backbone="alexnet")
    drop = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert drop(a) == drop(b)


def test_a_folder_of_images_is_a_reference(tmp_path):
    import matplotlib.pyplot as plt

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    plt.imsave(folder / "a.png", rng.random((40, 60, 3)))
    plt.imsave(folder / "b.PNG", rng.random((70, 50)), cmap="gray")
    (folder / "notes.txt").write_text("not an image")
    crops, info = load_reference(str(folder), 6, 32, seed=0)
    assert crops.shape == (6, 3, 32, 32) and crops.min() >= 0 and crops.max() <= 1
    assert info["photos"] == ["a.png", "b.PNG"] and info["n_images"] == 6
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="JPEG/PNG"):
        load_reference(str(empty), 4, 32, seed=0)
    with pytest.raises(ConfigError, match="'domain.reference'"):
        prepare_config({"domain": {"reference": str(tmp_path / "absent")}})
    plt.imsave(folder / "c.png", rng.random((8, 8, 3)))  # smaller than the input
    with pytest.raises(InputError, match=r"photo c.png is 8x8 pixels, smaller than .*32x32"):
        load_reference(str(folder), 6, 32, seed=0)


def test_domain_params_hold_no_learning_rate_and_only_this_backbones_weights():
    base = prepare_config({"training": {"weights": {"default": "none"}}})
    changed_lr = prepare_config({"training": {"weights": {"default": "none"},
                                              "lr": {"alexnet": {"head": 1e-2}}}})  # fmt: skip
    other = prepare_config({"training": {"weights": {"default": "none", "vgg16": "imagenet"}}})
    mine = prepare_config({"training": {"weights": {"default": "none", "alexnet": "imagenet"}}})
    params = step_params(DomainSettings, base, backbone="alexnet")
    assert "lr" not in json.loads(params)["training"]
    assert params == step_params(DomainSettings, changed_lr, backbone="alexnet")
    assert params == step_params(DomainSettings, other, backbone="alexnet")
    assert params != step_params(DomainSettings, mine, backbone="alexnet")
    rebuilt = DomainSettings.make(backbone="alexnet", **json.loads(params)["domain"],
                                  training=json.loads(params)["training"])  # fmt: skip
    assert rebuilt == DomainSettings.from_config(base, backbone="alexnet")


def test_the_workflow_expects_the_figures_the_step_writes(tmp_path):
    """The domain_shift jobs' outputs are the files `write_domain_figures` names (both read
    the registry's DOMAIN_FIGURES)."""
    write_config(tmp_path)
    dry = run_snakemake(tmp_path, "-n", "--until", "domain_shift")
    jobs = re.findall(r"^rule domain_shift:\n(?:    .*\n)*?    output: (.*)$",
                      dry.stdout + dry.stderr, flags=re.M)  # fmt: skip
    files = [f.removesuffix(" (update)") for job in jobs for f in job.split(", ")]
    listed = {Path(f).name for f in files if f.endswith(".png")}
    backbones = TINY["training"]["backbones"]
    assert listed == {f"{b}_{fig}.png" for b in backbones for fig in DOMAIN_FIGURES}


@needs_resnet18
@pytest.mark.shared
def test_the_shared_resnet18_file_is_said_folded_and_refused_by_adapt(images, tmp_path):
    result = run_domain(images, tmp_path, backbone="resnet18@layer2", weights=str(RESNET18))
    trained, random = result["slices"]
    assert trained["batchnorm"] == FOLDED and random["batchnorm"] == RANDOM_INIT
    assert trained["variants"]["zscore"]["bn_kl"] == FOLDED
    with pytest.raises(InputError, match="resnet18@layer2 with weights .* has folded BatchNorm"):
        train_job(images, tmp_path / "t", backbone="resnet18@layer2", weights=str(RESNET18),
                     batchnorm="adapt")  # fmt: skip


MOBILENET = SHARED / "weights" / "mobilenet_v2-b0353104.pth"
needs_mobilenet = pytest.mark.skipif(
    not MOBILENET.exists(),
    reason=f"shared MobileNetV2 weights absent: {MOBILENET} (set TEXTVISION_SHARED)",
)


@pytest.fixture
def torch_cache(tmp_path, monkeypatch):
    """A TORCH_HOME holding torchvision's MobileNetV2 ImageNet file where torchvision caches
    it, and no network: `weights: imagenet` must find it there."""
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / MOBILENET.name).symlink_to(MOBILENET)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return checkpoints


@needs_mobilenet
def test_mobilenet_v2_imagenet_slice_loads_offline_with_real_statistics(torch_cache):
    backbone = build_backbone("mobilenet_v2", "imagenet")
    body = backbone.body
    state = torch.load(MOBILENET, weights_only=True)
    own = {f"features.{k}": v for k, v in body.state_dict().items()}
    wanted = {k: v for k, v in state.items() if k.split(".")[0] == "features"}
    wanted = {k: v for k, v in wanted.items() if int(k.split(".")[1]) < 7}
    assert own.keys() == wanted.keys()  # strict for the slice: every tensor, no other
    counters = [k for k in wanted if k.endswith("num_batches_tracked")]  # never used frozen
    assert all(torch.equal(own[k], wanted[k]) for k in wanted if k not in counters)
    assert not any(p.requires_grad for p in backbone.parameters())  # frozen
    assert len(batchnorm_layers(body)) == 18 and not has_initial_statistics(body)
    before = {k: v.clone() for k, v in body.state_dict().items()}
    adapt_batchnorm(body, [torch.rand(8, 3, 48, 48) for _ in range(2)])
    after = body.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.endswith(("running_mean", "running_var", "num_batches_tracked"))
                         for k in moved)  # fmt: skip
    maps = body(torch.zeros(1, 3, 48, 48))
    assert maps.shape == (1, 32, 6, 6)  # stride 8, like the AlexNet and ShuffleNet slices


@needs_mobilenet
def test_mobilenet_v2_real_statistics_give_divergences_and_adapt(images, tmp_path, torch_cache):
    """The domain shift on MobileNetV2's real ImageNet BatchNorm statistics, and AdaBN
    (`training.batchnorm: adapt`) training on them."""
    result = run_domain(images, tmp_path, backbone="mobilenet_v2", weights="imagenet")
    trained = result["slices"][0]
    assert trained["weights"] == "imagenet" and trained["batchnorm"] == RUNNING
    for name in VARIANTS:
        assert trained["variants"][name]["bn_kl"] > 0
    assert trained["variants"]["adapted"]["bn_kl"] < trained["variants"]["zscore"]["bn_kl"]
    metrics = train_job(
        images, tmp_path / "t", backbone="mobilenet_v2", weights="imagenet", epochs=1,
        batchnorm="adapt",
    )  # fmt: skip
    assert metrics["batchnorm"] == "adapt" and metrics["weights"] == "imagenet"
