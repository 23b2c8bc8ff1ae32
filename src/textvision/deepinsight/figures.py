"""The `plot_mapping` step: DeepInsight's figures (feature density, class means, samples, the
2-D feature map)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from textvision.core.errors import InputError  # noqa: E402
from textvision.core.figures import robust_max, save_figure  # noqa: E402
from textvision.core.io import attrs_dict, decode, open_h5, verify_sealed  # noqa: E402
from textvision.core.registry import DEEPINSIGHT_FIGURES, png  # noqa: E402
from textvision.deepinsight.base import occupancy  # noqa: E402
from textvision.deepinsight.functional import feature_counts  # noqa: E402
from textvision.deepinsight.store import load_mapping  # noqa: E402
from textvision.deepinsight.transformer import assign_coordinates, bin_coordinates  # noqa: E402


def plot_mapping(mapping: str | Path, images: str | Path, outdir: str | Path) -> None:
    """The DeepInsight figures: feature density, class means and difference, samples, 2-D map."""
    transformer, info = load_mapping(mapping)
    verify_sealed(images, "render_images")
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
    figures = {name: Path(outdir) / png(name) for name in DEEPINSIGHT_FIGURES}
    counts = {transformer.discretization: transformer.feature_counts_}
    positions = transformer.pixels_ + 0.5
    if transformer.method == "deepinsight":  # the same positions, the other discretisation
        other = "assignment" if transformer.discretization == "bin" else "bin"
        place = assign_coordinates if other == "assignment" else bin_coordinates
        counts[other] = feature_counts(
            place(transformer.coords_, transformer.pixels), transformer.pixels
        )
        positions = transformer.coords_
    plot_feature_density(counts, figures["feature_density"])
    plot_class_means(images_all, labels[::step], names, figures["class_means"])
    plot_samples(samples, labels[sample], names, figures["samples"], transformer.method)
    plot_feature_map(positions, info["layers"], info["hidden_size"], figures["feature_map"])


def plot_feature_density(counts: dict[str, np.ndarray], path: str | Path) -> None:
    """Features per pixel under each discretisation (the fitted one first), with occupancy."""
    fig, axes = plt.subplots(1, len(counts), figsize=(4.4 * len(counts), 4), squeeze=False)
    for ax, (name, grid) in zip(axes[0], counts.items(), strict=True):
        occ = occupancy(grid)
        im = ax.imshow(grid, cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax, label="features per pixel", fraction=0.046)
        ax.set_title(
            f"{name}: {occ['pixels_used']}/{occ['pixels_total']} pixels used, "
            f"max {occ['max_features_per_pixel']} per pixel",
            fontsize=9,
        )
        ax.axis("off")
    save_figure(fig, path)


def plot_class_means(
    images: np.ndarray, labels: np.ndarray, names: list[str], path: str | Path
) -> None:
    """Mean image of each class and, for the first two, their difference."""
    means = [images[labels == k].mean(axis=0) for k in range(len(names))]
    panels = [(m, f"mean: {n}", "magma") for m, n in zip(means, names, strict=True)]
    panels.append((means[-1] - means[0], f"{names[-1]} - {names[0]}", "RdBu_r"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.3))
    for ax, (image, title, cmap) in zip(axes, panels, strict=True):
        if cmap == "RdBu_r":
            lim = np.percentile(np.abs(image), 99.5) or 1
            im = ax.imshow(image, cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
        else:
            im = ax.imshow(
                image, cmap=cmap, vmax=robust_max(np.stack(means)), interpolation="nearest"
            )
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    save_figure(fig, path)


def plot_samples(
    images: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    path: str | Path,
    method: str = "deepinsight",
    per_class: int = 6,
) -> None:
    vmax = robust_max(images)
    fig, axes = plt.subplots(
        len(names), per_class, figsize=(1.7 * per_class, 1.8 * len(names)), squeeze=False
    )
    for k, name in enumerate(names):
        idx = np.flatnonzero(labels == k)[:per_class]
        for j, ax in enumerate(axes[k]):
            if j < len(idx):
                ax.imshow(images[idx[j]], cmap="magma", vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[k, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(f"{method} images, validation rows", fontsize=10)
    save_figure(fig, path)


def plot_feature_map(coords: np.ndarray, layers: list[int], hidden: int, path: str | Path) -> None:
    """The features' positions (DeepInsight's rotated projection, or the pixels of a method that
    places features on the grid), coloured by the BERT layer each feature comes from."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    layer = np.repeat(np.arange(len(layers)), hidden)
    colors = plt.cm.viridis(np.linspace(0, 1, len(layers)))
    for i, name in enumerate(layers):
        sel = layer == i
        # row coordinate downwards, column across: oriented as the images
        ax.scatter(coords[sel, 1], coords[sel, 0], s=2, color=colors[i], label=f"layer {name}")
    ax.legend(markerscale=4, fontsize=7)
    ax.set_title("feature positions", fontsize=9)
    ax.set_aspect("equal")
    ax.invert_yaxis()
    save_figure(fig, path)
