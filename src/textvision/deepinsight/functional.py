"""DeepInsight's two per-sample operations in numpy: the fitted scaler and the pixel averaging
(features sharing a pixel averaged, empty pixels set to `empty_value`).

`functional_torch` holds the same functions, same names, in torch (what `explain` differentiates
through), as torchvision keeps `functional_tensor` beside `functional_pil`;
tests/test_functional.py checks that both give the same results. This module needs numpy and
scipy only. Scaler kinds are `SCALERS`; a fitted scaler is its statistics, a dict of arrays:
`log`: `min` (per feature), `max` (one number); `minmax`: `min`, `range`; `zscore`: `mean`,
`std`; `none`: nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from textvision.core.errors import InputError

SCALERS = ("log", "minmax", "zscore", "none")


def check_scaler(kind: str) -> None:
    """Refuse a scaler kind that is not one of `SCALERS`."""
    if kind not in SCALERS:
        raise InputError(f"DeepInsight scaler {kind!r}: expected one of {', '.join(SCALERS)}")


# -- scalers: fitted on the fit rows only, applied to all --------------------------------------
def fit_scaler(X: np.ndarray, kind: str) -> dict:
    """The statistics of scaler `kind` on the rows of `X` (`[n_samples, n_features]`)."""
    return fit_transform_scaler(X, kind)[0] if kind == "log" else _fit_statistics(X, kind)


def fit_transform_scaler(X: np.ndarray, kind: str) -> tuple[dict, np.ndarray]:
    """`fit_scaler(X, kind)` and `apply_scaler(X, kind, stats)` in one: the log scaler's
    statistics and scaled rows come from one logarithm pass (on the fit rows the clipping at 1
    and at 0 changes nothing, so the result is `apply_scaler`'s, bit for bit)."""
    if kind != "log":
        stats = _fit_statistics(X, kind)
        return stats, apply_scaler(X, kind, stats)
    min0 = X.min(axis=0)  # DeepInsight's norm-2 / pyDeepInsight's LogScaler
    logged = X + np.abs(min0)
    logged += 1
    np.log(logged, out=logged)
    top = np.float32(logged.max())
    logged /= top
    np.clip(logged, 0, 1, out=logged)
    return {"min": min0, "max": top}, logged.astype(np.float32, copy=False)


def _fit_statistics(X: np.ndarray, kind: str) -> dict:
    check_scaler(kind)
    if kind == "minmax":
        lo, hi = X.min(axis=0), X.max(axis=0)
        return {"min": lo, "range": np.where(hi > lo, hi - lo, 1).astype(np.float32)}
    if kind == "zscore":
        std = X.std(axis=0)
        return {"mean": X.mean(axis=0), "std": np.where(std > 0, std, 1).astype(np.float32)}
    return {}


def apply_scaler(X: np.ndarray, kind: str, stats: dict) -> np.ndarray:
    """Scaled copy of `X` (float32), computed in place on one new array."""
    if kind == "log":
        # values below the fit data's minimum (unseen rows) clip to 0 instead of log(<1) or NaN
        out = X + np.abs(stats["min"])
        out += 1
        np.maximum(out, 1, out=out)
        np.log(out, out=out)
        out /= stats["max"]
        np.clip(out, 0, 1, out=out)
        return out.astype(np.float32, copy=False)
    if kind == "minmax":
        out = X - stats["min"]
        out /= stats["range"]
        return out.astype(np.float32, copy=False)
    if kind == "zscore":
        out = X - stats["mean"]
        out /= stats["std"]
        return out.astype(np.float32, copy=False)
    check_scaler(kind)
    return X.astype(np.float32)


def invert_scaler(values: np.ndarray, kind: str, stats: dict) -> np.ndarray:
    """Feature values from scaled ones (`apply_scaler` undone; clipped values stay clipped)."""
    if kind == "log":
        return (np.exp(values * stats["max"]) - np.abs(stats["min"]) - 1).astype(np.float32)
    if kind == "minmax":
        return (values * stats["range"] + stats["min"]).astype(np.float32)
    if kind == "zscore":
        return (values * stats["std"] + stats["mean"]).astype(np.float32)
    check_scaler(kind)
    return values


# -- pixel averaging ---------------------------------------------------------------------------
def feature_counts(pixels: np.ndarray, size: int) -> np.ndarray:
    """`[size, size]` number of features in each pixel, from their `[n, 2]` pixel coordinates."""
    counts = np.zeros((size, size), dtype=np.int64)
    np.add.at(counts, (pixels[:, 0], pixels[:, 1]), 1)
    return counts


def averaging_map(
    pixels: np.ndarray, size: int, empty_value: float
) -> tuple[sparse.csr_matrix, np.ndarray]:
    """The pixel averaging as a linear map: the flattened image of scaled features `s` is
    `M @ s + e`. `M` (`[size*size, n_features]`, sparse float32) holds `1/count` of pixel p at
    the features that landed in p (`pixels`: `[n_features, 2]` row and column of each), `e`
    (`[size*size]`) `empty_value` at the pixels no feature landed in, 0 elsewhere."""
    flat = pixels[:, 0] * size + pixels[:, 1]
    counts = feature_counts(pixels, size).ravel()
    n = len(flat)
    matrix = sparse.csr_matrix(
        (1.0 / counts[flat], (flat, np.arange(n))), shape=(size * size, n), dtype=np.float32
    )
    empty = np.where(counts == 0, np.float32(empty_value), np.float32(0))
    return matrix, empty.astype(np.float32)


@dataclass(frozen=True)
class AveragingPlan:
    """How `average_pixels` computes the map of `averaging_map` fast: pixels are grouped by
    their number `c` of features; `gather` lists the features group after group, each group
    slot-major (every pixel's first feature, then every pixel's second, ...), so a pixel's mean
    is a sum over `c` contiguous slabs of the gathered row, times `1/c`.

    Attributes:
        size: images are size x size.
        gather: feature indices in that order.
        pixel_index: the flat pixel of each mean, in the order the means are computed.
        inverse: float32 `1/count` of those pixels.
        spans: per group, (features per pixel `c`, pixels, start in `gather`, start in the
            means).
    """

    size: int
    gather: np.ndarray
    pixel_index: np.ndarray
    inverse: np.ndarray
    spans: tuple[tuple[int, int, int, int], ...]


def averaging_plan(pixels: np.ndarray, size: int) -> AveragingPlan:
    """The `AveragingPlan` of features at `pixels` (`[n_features, 2]` row and column)."""
    flat = pixels[:, 0] * size + pixels[:, 1]
    counts = feature_counts(pixels, size).ravel()
    order = np.argsort(flat, kind="stable")
    sorted_flat = flat[order]
    starts = np.flatnonzero(np.r_[True, sorted_flat[1:] != sorted_flat[:-1]])
    used = sorted_flat[starts]
    gather, pixel_index, spans = [], [], []
    at_gather = at_pixel = 0
    for c in np.unique(counts[used]):
        pick = counts[used] == c
        members = order[starts[pick][:, None] + np.arange(c)]  # [pixels, c] features
        gather.append(members.T.ravel())
        pixel_index.append(used[pick])
        spans.append((int(c), int(pick.sum()), at_gather, at_pixel))
        at_gather, at_pixel = at_gather + members.size, at_pixel + int(pick.sum())
    pixel_index = np.concatenate(pixel_index) if pixel_index else np.zeros(0, np.int64)
    return AveragingPlan(
        size=int(size),
        gather=np.concatenate(gather) if gather else np.zeros(0, np.int64),
        pixel_index=pixel_index,
        inverse=(1.0 / counts[pixel_index]).astype(np.float32),
        spans=tuple(spans),
    )


def average_pixels(
    scaled: np.ndarray,
    plan: AveragingPlan,
    empty_value: float,
    out: np.ndarray | None = None,
    work: np.ndarray | None = None,
) -> np.ndarray:
    """`[B, n_features]` scaled features -> `[B, size, size]` float32 images: each pixel the
    mean of its features, `empty_value` where none landed.

    Args:
        scaled: float32 scaled features.
        plan: `averaging_plan` of the features' pixels.
        empty_value: the value of empty pixels.
        out: a `[B, size*size]` float32 array to write the images into (None: a new one).
        work: a float32 buffer of at least `[B, len(plan.pixel_index)]` for the means (None: a
            new one), so that a caller rendering block after block allocates it once.
    """
    n = len(scaled)
    out = np.empty((n, plan.size * plan.size), dtype=np.float32) if out is None else out
    work = np.empty((n, len(plan.pixel_index)), dtype=np.float32) if work is None else work
    gathered = scaled.take(plan.gather, axis=1)
    mean = work[:n]
    for c, count, at_gather, at_pixel in plan.spans:
        slabs = gathered[:, at_gather : at_gather + c * count]
        if c == 1:
            mean[:, at_pixel : at_pixel + count] = slabs
        else:
            np.sum(slabs.reshape(n, c, count), axis=1, out=mean[:, at_pixel : at_pixel + count])
    mean *= plan.inverse
    out.fill(empty_value)  # then every used pixel is overwritten
    out[:, plan.pixel_index] = mean
    return out.reshape(n, plan.size, plan.size)
