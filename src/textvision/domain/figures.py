"""The `domain_shift` step's figures, from its result and inputs: a text and a natural image as
the backbone receives them, one text image through each normalisation, the input-value
histograms of every variant, the Fréchet distance per slice and variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from textvision.core.figures import plt, save_figure
from textvision.core.registry import DOMAIN_FIGURES, DOMAIN_INPUTS, DOMAIN_VARIANTS, TEXT_VARIANTS

# each input's colour; like the figures' names and the variants, from the registry
COLOURS = {name: spec.colour for name, spec in DOMAIN_INPUTS.items()}


def provenance(result: dict) -> str:
    """One line: which reference, how many natural crops and text images."""
    ref, text = result["reference"], result["text"]
    source = "scikit-learn sample photos" if ref["reference"] == "sklearn" else ref["reference"]
    return (
        f"reference: {source} ({ref['n_images']} crops of {ref['size']}x{ref['size']}); "
        f"text: {text['n_images']} of {text['n_train']} training images"
    )


def _colorbar(fig, ax, image) -> None:
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)


def plot_inputs(received: np.ndarray, natural: np.ndarray, path: Path, title: str) -> None:
    """(a) A text image and a natural crop as the backbone receives them."""
    fig, (ax_text, ax_nat) = plt.subplots(1, 2, figsize=(8.4, 4))
    shown = ax_text.imshow(received, cmap="gray")
    _colorbar(fig, ax_text, shown)
    ax_text.set_title("text image, Z-normalised (all 3 channels equal)", fontsize=8)
    lo, hi = float(natural.min()), float(natural.max())
    ax_nat.imshow(np.transpose((natural - lo) / max(hi - lo, 1e-12), (1, 2, 0)))
    ax_nat.set_title(
        f"natural crop, ImageNet-normalised\n(values {lo:.2f} to {hi:.2f}, shown rescaled)",
        fontsize=8,
    )
    for ax in (ax_text, ax_nat):
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def plot_normalisation(images: dict[str, np.ndarray], path: Path, title: str) -> None:
    """(b) One text image before and after the Z-normalisation (and per-pixel normalisation)."""
    labels = {
        "raw": "raw (as rendered)",
        "zscore": "Z-normalised (the paper)",
        "pixel": "per-pixel normalised",
    }
    fig, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 3.8))
    for ax, (name, image) in zip(axes, images.items(), strict=True):
        shown = ax.imshow(image, cmap="viridis")
        _colorbar(fig, ax, shown)
        ax.set_title(labels.get(name, name), fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def plot_histograms(levels: dict, path: Path, title: str) -> None:
    """The input values of every variant on one plot (densities, log scale)."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for name, level in levels.items():
        edges = np.asarray(level["histogram"]["edges"])
        counts = np.asarray(level["histogram"]["counts"], dtype=float)
        density = counts / max(counts.sum(), 1) / np.diff(edges)
        label = (
            f"{name}: mean {level['mean']:.2f}, std {level['std']:.2f}, "
            f"skew {level['skew']:.2f}, zeros {level['zero_fraction']:.0%}"
        )
        ax.stairs(np.maximum(density, 1e-6), edges, label=label, color=COLOURS.get(name), lw=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("input value reaching the backbone")
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def plot_frechet(slices: list[dict], path: Path, title: str) -> None:
    """Fréchet distance to the natural crops per slice (weights) and variant; the dashed line
    is the distance between two halves of the natural crops."""
    fig, ax = plt.subplots(figsize=(max(5.0, 3.2 * len(slices)), 3.8))
    width = 0.8 / len(DOMAIN_VARIANTS)
    for i, sl in enumerate(slices):
        for j, variant in enumerate(DOMAIN_VARIANTS):
            x = i + (j - (len(DOMAIN_VARIANTS) - 1) / 2) * width
            value = sl["variants"][variant]["frechet"]
            if isinstance(value, str):
                ax.text(x, 0.5, "n/a", ha="center", fontsize=7, transform=ax.get_xaxis_transform())
                continue
            ax.bar(x, value, width, color=COLOURS[variant], label=variant if i == 0 else None)
        floor = sl["natural_halves_frechet"]
        ax.hlines(floor, i - 0.4, i + 0.4, colors="black", linestyles="dashed", lw=1)
    labels = [f"weights {Path(sl['weights']).name}" for sl in slices]
    ax.set_xticks(range(len(slices)), labels, fontsize=8)
    ax.set_ylabel("Fréchet distance to natural crops")
    ax.set_yscale("symlog", linthresh=1e-3)
    numbers = [v["frechet"] for sl in slices for v in sl["variants"].values()]
    ax.set_ylim(0, 3 * max([n for n in numbers if not isinstance(n, str)], default=1.0))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(
        fontsize=7,
        title="dashed: natural vs natural",
        title_fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
    )
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def write_domain_figures(result: dict, sample: dict[str, np.ndarray], outdir: Path) -> dict:
    """Write the four figures of one backbone into `outdir`; their file names by figure.

    `sample`: one text image `raw`, `zscore`, `pixel` (`[P, P]`), the same as the backbone
    receives it (`received`, `[S, S]`) and a natural crop as it receives it (`natural`,
    `[3, S, S]`)."""
    backbone = result["backbone"]
    names = {fig: f"{backbone}_{fig}.png" for fig in DOMAIN_FIGURES}
    title = f"{backbone}: {provenance(result)}"
    plot_inputs(sample["received"], sample["natural"], outdir / names["inputs"], title)
    variants = {name: sample[name] for name in TEXT_VARIANTS}
    plot_normalisation(variants, outdir / names["normalisation"], title)
    plot_histograms(result["pixel_level"], outdir / names["histograms"], title)
    plot_frechet(result["slices"], outdir / names["frechet"], title)
    return names
