"""Workflow steps around DeepInsight: fit the mapping on the chosen rows, render every image."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from textvision.deepinsight import (
    DeepInsightTransformer,
    assign_coordinates,
    bin_coordinates,
    feature_counts,
)
from textvision.errors import InputError
from textvision.io import (
    atomic_path,
    attrs_dict,
    check_finite,
    decode,
    open_h5,
    set_attrs,
    string_array,
)

log = logging.getLogger(__name__)

CHUNK = 1024  # rows rendered at a time: larger chunks fragment the heap and grow memory with N
_STATE = ("embedding_", "rotation_", "coords_", "pixels_", "feature_counts_")


def read_embeddings(path: str | Path, rows: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """The `[N, L, H]` `cls` tensor (optionally a boolean row selection) flattened to `[n, L*H]`."""
    with open_h5(path, "cls", "split") as fh:
        cls = fh["cls"]
        if cls.ndim != 3:
            raise InputError(
                f"{path}: dataset 'cls' has shape {cls.shape}; expected [N, layers, hidden]"
            )
        X = cls[np.flatnonzero(rows)] if rows is not None else cls[:]
        attrs = attrs_dict(fh)
    X = X.reshape(len(X), -1)
    check_finite(X, path, "cls")
    return X, attrs


def read_splits(path: str | Path) -> np.ndarray:
    with open_h5(path, "cls", "split") as fh:
        return decode(fh["split"][:])


def fit_mapping(
    embeddings: str | Path,
    out: str | Path,
    *,
    fit_on: str = "train",
    threads: int | None = None,
    **params,
) -> DeepInsightTransformer:
    """Fit a DeepInsightTransformer on the training rows (or all rows) and save it as HDF5."""
    split = read_splits(embeddings)
    if fit_on == "all":
        log.warning(
            "deepinsight.fit_on=all: scaler and projection see the validation/test rows; "
            "this reproduces the original code and leaks into validation accuracy"
        )
        rows = np.ones(len(split), bool)
    else:
        rows = split == "train"
    if rows.sum() < 2:
        raise InputError(f"{embeddings}: {rows.sum()} rows to fit on (fit_on={fit_on})")
    X, attrs = read_embeddings(embeddings, rows)
    transformer = DeepInsightTransformer(**params, n_jobs=threads).fit(X)
    save_mapping(
        transformer,
        out,
        {
            "fit_on": fit_on,
            "n_fit_rows": int(rows.sum()),
            "layers": attrs["layers"],
            "model": attrs["model"],
            "hidden_size": X.shape[1] // len(attrs["layers"]),
        },
    )
    log.info("mapping %s: %s", out, transformer.occupancy_)
    return transformer


def save_mapping(transformer: DeepInsightTransformer, out: str | Path, info: dict) -> None:
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as fh:
        for name in _STATE:
            fh[name.rstrip("_")] = getattr(transformer, name)
        scale = fh.create_group("scale")
        for key, value in transformer.scale_.items():
            scale[key] = value
        set_attrs(
            fh,
            {
                "params": transformer.get_params(),
                "occupancy": transformer.occupancy_,
                "n_features": transformer.n_features_in_,
                **info,
            },
        )


def load_mapping(path: str | Path) -> tuple[DeepInsightTransformer, dict]:
    """The fitted transformer stored in `mapping.h5`, and the file's attributes."""
    with open_h5(path, *(name.rstrip("_") for name in _STATE), "scale") as fh:
        attrs = attrs_dict(fh)
        transformer = DeepInsightTransformer(**attrs["params"])
        for name in _STATE:
            setattr(transformer, name, fh[name.rstrip("_")][()])
        transformer.scale_ = {key: fh["scale"][key][()] for key in fh["scale"]}
    transformer.n_features_in_ = attrs["n_features"]
    return transformer, attrs


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
    eps: float = 1e-8,
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
                    "eps": eps,
                    "pixels": pixels,
                    "fit_on": info["fit_on"],
                    "discretization": transformer.discretization,
                    "occupancy": info["occupancy"],
                },
            )


def plot_mapping(mapping: str | Path, images: str | Path, outdir: str | Path) -> None:
    """The DeepInsight figures: feature density, class means and difference, samples, 2-D map."""
    from textvision.plots import (
        plot_class_means,
        plot_feature_density,
        plot_feature_map,
        plot_samples,
    )

    transformer, info = load_mapping(mapping)
    with open_h5(images, "images", "label", "split") as fh:
        if fh["images"].shape[1:] != (transformer.pixels, transformer.pixels):
            raise InputError(
                f"{images}: images of {fh['images'].shape[1:]} pixels; the mapping "
                f"{mapping} gives {transformer.pixels}x{transformer.pixels}"
            )
        names = attrs_dict(fh)["label_names"]
        labels, split = fh["label"][:], decode(fh["split"][:])
        val = np.flatnonzero(split == "val")
        sample = np.sort(np.concatenate([val[labels[val] == k][:6] for k in range(len(names))]))
        step = max(1, len(labels) // 20000)  # class means from at most ~20k rows
        images_all = fh["images"][::step]
        samples = fh["images"][sample]
    outdir = Path(outdir)
    # the same positions under the other discretisation, for comparison
    other = "assignment" if transformer.discretization == "bin" else "bin"
    place = assign_coordinates if other == "assignment" else bin_coordinates
    alternative = feature_counts(place(transformer.coords_, transformer.pixels), transformer.pixels)
    plot_feature_density(
        {transformer.discretization: transformer.feature_counts_, other: alternative},
        outdir / "feature_density.png",
    )
    plot_class_means(images_all, labels[::step], names, outdir / "class_means.png")
    plot_samples(samples, labels[sample], names, outdir / "samples.png")
    plot_feature_map(
        transformer.coords_, info["layers"], info["hidden_size"], outdir / "feature_map.png"
    )
