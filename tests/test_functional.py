"""DeepInsight's scaler and pixel averaging, one implementation each in numpy
(`deepinsight.functional`, what the transformer renders with) and in torch
(`deepinsight.functional_torch`, what `explain` differentiates through): the two give the same
results, for every scaler kind the config schema allows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textvision.config.schema import schema_node
from textvision.core.errors import InputError
from textvision.deepinsight import functional as F
from textvision.deepinsight import functional_torch as FT

SCHEMA_SCALERS = schema_node("deepinsight.scaler")["enum"]


def features(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fit rows, and unseen rows reaching below the fit minimum and above the fit maximum."""
    rng = np.random.default_rng(seed)
    spread = rng.uniform(0.1, 3, 40)
    fit = (rng.normal(size=(50, 40)) * spread).astype(np.float32)
    fit[:, 0] = 2.5  # a constant feature: minmax range and z-score std fall back to 1
    unseen = (rng.normal(size=(20, 40)) * spread * 3).astype(np.float32)
    return fit, unseen


def test_the_scalers_are_the_schema_scalers():
    assert sorted(F.SCALERS) == sorted(SCHEMA_SCALERS)


@pytest.mark.parametrize("kind", SCHEMA_SCALERS)
def test_torch_scaler_equals_numpy_scaler(kind):
    fit, unseen = features()
    rows = np.vstack([fit, unseen])
    stats = F.fit_scaler(fit, kind)
    expected = F.apply_scaler(rows, kind, stats)
    got = FT.apply_scaler(torch.from_numpy(rows), kind, FT.scaler_tensors(stats))
    assert got.dtype == torch.float32 and expected.dtype == np.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(FT.torch_scaler(kind, stats)(torch.from_numpy(rows)), got)
    if kind == "log":  # unseen values below the fit minimum clip to 0, above the maximum to 1
        assert (expected[50:] == 0).any() and (expected[50:] == 1).any()


@pytest.mark.parametrize("kind", SCHEMA_SCALERS)
def test_fit_transform_scaler_is_fit_then_apply_bit_for_bit(kind):
    fit, _ = features(1)
    stats, scaled = F.fit_transform_scaler(fit, kind)
    alone = F.fit_scaler(fit, kind)
    assert stats.keys() == alone.keys()
    assert all(np.array_equal(stats[k], alone[k]) for k in stats)
    assert np.array_equal(scaled, F.apply_scaler(fit, kind, alone))


@pytest.mark.parametrize("kind", SCHEMA_SCALERS)
def test_invert_scaler_undoes_the_scaler_on_fit_rows(kind):
    fit, _ = features(2)
    stats = F.fit_scaler(fit, kind)
    back = F.invert_scaler(F.apply_scaler(fit, kind, stats), kind, stats)
    np.testing.assert_allclose(back, fit, atol=1e-4, rtol=1e-4)


def test_an_unknown_scaler_is_refused_by_both():
    fit, _ = features()
    for call in (
        lambda: F.fit_scaler(fit, "robust"),
        lambda: F.apply_scaler(fit, "robust", {}),
        lambda: FT.apply_scaler(torch.from_numpy(fit), "robust", {}),
        lambda: FT.torch_scaler("robust", {}),
    ):
        with pytest.raises(InputError, match="scaler 'robust': expected one of log, minmax"):
            call()


def naive_images(scaled: np.ndarray, pixels: np.ndarray, size: int, empty: float) -> np.ndarray:
    """Each pixel the mean of its features, one pixel at a time."""
    out = np.full((len(scaled), size, size), empty, dtype=np.float64)
    for r in range(size):
        for c in range(size):
            here = (pixels[:, 0] == r) & (pixels[:, 1] == c)
            if here.any():
                out[:, r, c] = scaled[:, here].astype(np.float64).mean(axis=1)
    return out


@pytest.mark.parametrize(
    "size, n_features",
    [(4, 60), (6, 20), (9, 9)],
    ids=["crowded", "some-empty", "mostly-empty"],
)
def test_torch_averaging_equals_numpy_averaging(size, n_features):
    rng = np.random.default_rng(size)
    pixels = rng.integers(0, size, size=(n_features, 2))
    pixels[(pixels == 0).all(axis=1)] = size - 1  # pixel (0, 0) stays empty
    pixels[1] = pixels[0]  # and some pixel holds several features
    scaled = rng.normal(size=(12, n_features)).astype(np.float32)
    images = F.average_pixels(scaled, F.averaging_plan(pixels, size), -0.5)
    assert images.shape == (12, size, size) and images.dtype == np.float32
    np.testing.assert_allclose(images, naive_images(scaled, pixels, size, -0.5), atol=1e-6)
    counts = F.feature_counts(pixels, size)
    assert counts.sum() == n_features and counts[0, 0] == 0 and counts.max() > 1
    matrix, empty = F.averaging_map(pixels, size, -0.5)
    linear = (matrix @ scaled.T).T + empty
    np.testing.assert_allclose(linear.reshape(images.shape), images, atol=1e-6)
    pixel, weight, empty_t = FT.averaging_tensors(pixels, size, -0.5)
    x = torch.from_numpy(scaled).requires_grad_(True)
    got = FT.average_pixels(x, pixel, weight, empty_t, size)
    assert got.shape == images.shape and got.dtype == torch.float32
    np.testing.assert_allclose(got.detach().numpy(), images, rtol=1e-6, atol=1e-6)
    # the torch version's gradient is the averaging map's transpose
    upstream = rng.normal(size=(12, size, size)).astype(np.float32)
    (grad,) = torch.autograd.grad((got * torch.from_numpy(upstream)).sum(), x)
    expected = (matrix.T @ upstream.reshape(12, -1).T).T
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_numpy_averaging_writes_into_the_buffers_it_is_given():
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 5, size=(30, 2))
    scaled = rng.normal(size=(7, 30)).astype(np.float32)
    plan = F.averaging_plan(pixels, 5)
    out = np.full((7, 25), np.nan, dtype=np.float32)
    work = np.empty((10, len(plan.pixel_index)), dtype=np.float32)  # more rows than needed
    images = F.average_pixels(scaled, plan, 0.0, out=out, work=work)
    assert np.shares_memory(images, out) and not np.isnan(out).any()
    assert np.array_equal(images, F.average_pixels(scaled, plan, 0.0))
