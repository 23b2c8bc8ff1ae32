"""An image model's attributions over a run's validation texts: `features.csv` (per feature its
BERT layer, dimension, pixel and mean attribution per class) and two figures (PNG): the mean
attribution map per class on the image grid, and the attribution mass per BERT layer."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from textvision.io import atomic_path  # noqa: E402
from textvision.plots import save_figure  # noqa: E402

FEATURES_CSV = "features.csv"
MAP_FIGURE = "attribution_map.png"
LAYER_FIGURE = "layer_attribution.png"


def feature_table(result, layers: list[int], pixels: np.ndarray) -> pd.DataFrame:
    """One row per feature of `result` (`explain.FeatureAttributions`): feature (index into the
    flattened `[layers, H]` vector), layer (the encoder layer, 1-based), dimension, pixel_row,
    pixel_col, then `mean_<class>` and `mean_abs_<class>` per class."""
    n = result.mean.shape[1]
    hidden = n // len(layers)
    feature = np.arange(n)
    table = pd.DataFrame(
        {
            "feature": feature,
            "layer": np.asarray(layers)[feature // hidden],
            "dimension": feature % hidden,
            "pixel_row": pixels[:, 0],
            "pixel_col": pixels[:, 1],
        }
    )
    for k, name in enumerate(result.class_names):
        table[f"mean_{name}"] = result.mean[k]
    for k, name in enumerate(result.class_names):
        table[f"mean_abs_{name}"] = result.mean_abs[k]
    return table


def layer_mass(result, n_layers: int) -> np.ndarray:
    """`[classes, layers]` share of each class's mean absolute attribution per BERT layer."""
    mass = result.mean_abs.reshape(len(result.class_names), n_layers, -1).sum(-1)
    return mass / np.maximum(mass.sum(1, keepdims=True), 1e-30)


def plot_attribution_map(result, path: str | Path) -> None:
    """Mean gradient x input per pixel, one panel per class, on a symmetric red/blue scale."""
    k = len(result.class_names)
    fig, axes = plt.subplots(1, k, figsize=(3.4 * k + 0.8, 3.4), squeeze=False)
    top = float(np.abs(result.pixel_mean).max()) or 1.0
    for ax, name, values, count in zip(
        axes[0], result.class_names, result.pixel_mean, result.counts, strict=True
    ):
        shown = ax.imshow(values, cmap="RdBu_r", vmin=-top, vmax=top)
        ax.set_title(f"{name} ({count} texts)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes[0].tolist(), shrink=0.85, label="gradient x input")
    fig.suptitle("Mean attribution to the true class per pixel (red: for it, blue: against)")
    save_figure(fig, path)


def plot_layer_attribution(result, layers: list[int], path: str | Path) -> None:
    """Bars: the share of each class's attribution mass (sum of mean absolute attributions of
    its features) per BERT layer."""
    share = layer_mass(result, len(layers))
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(layers) * len(result.class_names), 3.4))
    width = 0.8 / len(result.class_names)
    x = np.arange(len(layers))
    for k, name in enumerate(result.class_names):
        ax.bar(
            x + (k - (len(result.class_names) - 1) / 2) * width, 100 * share[k], width, label=name
        )
    ax.set_xticks(x, [f"layer {layer}" for layer in layers])
    ax.set_ylabel("share of attribution mass (%)")
    ax.set_title("Attribution mass per BERT layer")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def write_feature_outputs(folder: str | Path, result, bundle) -> list[str]:
    """`features.csv` and the two figures into `folder`; their file names."""
    folder = Path(folder)
    layers = list(bundle.layers)
    with atomic_path(folder / FEATURES_CSV) as tmp:
        feature_table(result, layers, bundle.transformer.pixels_).to_csv(
            tmp, index=False, float_format="%.6g"
        )
    plot_attribution_map(result, folder / MAP_FIGURE)
    plot_layer_attribution(result, layers, folder / LAYER_FIGURE)
    return [FEATURES_CSV, MAP_FIGURE, LAYER_FIGURE]
