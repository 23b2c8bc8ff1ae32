"""The `render_images` step: one image per text through the fitted mapping, with the training
pixels' statistics for the Z-normalisation."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from textvision.core.errors import InputError
from textvision.core.io import (
    atomic_path,
    attrs_dict,
    check_finite,
    check_free_space,
    decode,
    open_h5,
    seal,
    set_attrs,
    string_array,
)
from textvision.core.paper import NORMALISATION_EPS
from textvision.deepinsight.store import load_mapping

CHUNK = 1024  # rows rendered at a time: larger chunks fragment the heap and grow memory with N


class PixelMoments:
    """Per-column mean and variance over the selected rows of a stream of `[n, d]` float32
    blocks: float32 sums of deviations from the first block's column means (no cancellation),
    accumulated over blocks in float64."""

    def __init__(self):
        self.shift = self.sums = self.squares = None
        self.count = 0

    def add(self, block: np.ndarray, selected: np.ndarray) -> None:
        if self.shift is None:
            self.shift = block.mean(axis=0)
            self.sums, self.squares = np.zeros(block.shape[1]), np.zeros(block.shape[1])
        deviations = block[selected]
        deviations -= self.shift
        self.sums += deviations.sum(axis=0)
        self.squares += np.einsum("ij,ij->j", deviations, deviations)
        self.count += len(deviations)

    def mean(self) -> np.ndarray:
        return self.shift + self.sums / self.count

    def var(self) -> np.ndarray:
        return np.maximum(self.squares / self.count - (self.sums / self.count) ** 2, 0.0)


def render_images(
    embeddings: str | Path,
    mapping: str | Path,
    out: str | Path,
    threads: int | None = None,
) -> None:
    """Images of every row (`images` `[N, P, P]` float32) with id/label/split, the training
    pixels' `mu` and `sigma` (attributes) for the Z-normalisation `(x - mu) / (sigma + eps)`, and
    their per-pixel maps (datasets `pixel_mean`, `pixel_std`)."""
    transformer, info = load_mapping(mapping)
    transformer.set_params(n_jobs=threads)
    with open_h5(embeddings, "cls", "id", "label", "split") as src:
        cls = src["cls"]
        n_features = int(np.prod(cls.shape[1:]))
        if n_features != transformer.n_features_in_:
            raise InputError(
                f"{embeddings}: {cls.shape[1:]} = {n_features} features per row; the mapping "
                f"{mapping} was fitted on {transformer.n_features_in_}"
            )
        split = decode(src["split"][:])
        pixels = transformer.pixels
        moments = PixelMoments()
        check_free_space(out, 4 * len(split) * pixels * pixels + (1 << 20))
        with atomic_path(out) as tmp, h5py.File(tmp, "w") as dst:
            images = dst.create_dataset(
                "images", shape=(len(split), pixels, pixels), dtype="float32"
            )
            for lo in tqdm(range(0, len(split), CHUNK), desc="render images", unit="chunk"):
                X = cls[lo : lo + CHUNK].reshape(-1, n_features)
                check_finite(X, embeddings, "cls")
                img = transformer.transform(X)
                images[lo : lo + len(img)] = img
                moments.add(img.reshape(len(img), -1), split[lo : lo + len(img)] == "train")
            dst["id"] = string_array(decode(src["id"][:]))
            dst["label"] = src["label"][:]
            dst["split"] = string_array(split)
            pixel_mean, pixel_var = moments.mean(), moments.var()
            dst["pixel_mean"] = pixel_mean.reshape(pixels, pixels).astype(np.float32)
            dst["pixel_std"] = np.sqrt(pixel_var).reshape(pixels, pixels).astype(np.float32)
            mu = float(pixel_mean.mean())  # over all training pixels: the paper's scalar Z
            sigma = float(np.sqrt(max((pixel_var + pixel_mean**2).mean() - mu**2, 0.0)))
            set_attrs(
                dst,
                {
                    **attrs_dict(src),
                    "mu": mu,
                    "sigma": sigma,
                    "eps": NORMALISATION_EPS,
                    "pixels": pixels,
                    "fit_on": info["fit_on"],
                    "method": transformer.method,
                    "discretization": transformer.discretization,
                    "layout": transformer.layout,
                    "occupancy": info["occupancy"],
                },
            )
            seal(dst)
