"""DeepInsight's scaler and pixel averaging in torch: the functions of `functional` (numpy), same
names, on tensors and differentiable, in the same float32 operations (to float32 rounding: the
averaging sums features weighted by `1/count` instead of summing then scaling).
tests/test_functional.py checks both against each other for every scaler kind.

This module needs torch (the `train` extra); `fit_mapping` and `render_images` run without it,
on `functional`. `explain` builds a bundle's differentiable path from it.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from textvision.deepinsight.functional import averaging_map, check_scaler


def scaler_tensors(stats: dict, device="cpu") -> dict:
    """A fitted scaler's statistics (`functional.fit_scaler`) as float32 tensors on `device`."""
    return {
        name: torch.as_tensor(np.asarray(value, dtype=np.float32), device=device)
        for name, value in stats.items()
    }


def apply_scaler(x: torch.Tensor, kind: str, stats: dict) -> torch.Tensor:
    """`[B, n_features]` -> scaled `[B, n_features]`, as `functional.apply_scaler`; `stats`
    from `scaler_tensors`."""
    if kind == "log":
        shifted = x + stats["min"].abs() + 1  # unseen values below the minimum clip to 0
        return (torch.log(torch.clamp(shifted, min=1)) / stats["max"]).clamp(0, 1)
    if kind == "minmax":
        return (x - stats["min"]) / stats["range"]
    if kind == "zscore":
        return (x - stats["mean"]) / stats["std"]
    check_scaler(kind)
    return x


def torch_scaler(kind: str, stats: dict, device="cpu"):
    """DeepInsight's fitted scaler as a torch function `[B, n_features] -> [B, n_features]` on
    `device` (`apply_scaler` with the statistics as tensors, made once)."""
    check_scaler(kind)
    return functools.partial(apply_scaler, kind=kind, stats=scaler_tensors(stats, device))


def averaging_tensors(
    pixels: np.ndarray, size: int, empty_value: float, device="cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`average_pixels`' `pixel`, `weight` and `empty` of features at `pixels` (`[n_features,
    2]` row and column), from `functional.averaging_map` (the torch side's
    `functional.averaging_plan`)."""
    matrix, empty = averaging_map(pixels, size, empty_value)
    coo = matrix.tocoo()
    order = np.argsort(coo.col)  # one entry per feature (column): in feature order
    return (
        torch.as_tensor(coo.row[order], dtype=torch.long, device=device),
        torch.as_tensor(coo.data[order], dtype=torch.float32, device=device),
        torch.as_tensor(empty, device=device),
    )


def average_pixels(
    scaled: torch.Tensor,
    pixel: torch.Tensor,
    weight: torch.Tensor,
    empty: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """`[B, n_features]` scaled features -> `[B, size, size]` images, as
    `functional.average_pixels`: the linear map of `functional.averaging_map` applied as an
    index-add (its gradient is the map's transpose). `pixel`, `weight` and `empty` come from
    `averaging_tensors`.

    Args:
        scaled: scaled features.
        pixel: `[n_features]` long, the flat pixel of each feature.
        weight: `[n_features]` float32, `1/count` of that pixel.
        empty: `[size*size]` float32, `empty_value` at empty pixels, 0 elsewhere.
        size: images are size x size.
    """
    out = empty.expand(len(scaled), -1).clone()
    out = out.index_add(1, pixel, scaled * weight)
    return out.view(len(scaled), size, size)
