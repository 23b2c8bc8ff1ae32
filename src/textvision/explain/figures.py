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

from textvision.core.figures import save_figure  # noqa: E402
from textvision.core.io import atomic_path  # noqa: E402
from textvision.core.registry import EXPLAIN_FIGURES, png  # noqa: E402

FEATURES_CSV = "features.csv"
INDEX_CSV = "index.csv"  # one row per explained text, beside the pages
MAP_FIGURE, LAYER_FIGURE = (png(name) for name in EXPLAIN_FIGURES)


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


def layer_shares(features: pd.DataFrame) -> pd.DataFrame:
    """Per BERT layer (rows) and class (columns) the share of the class's attribution mass (sum
    of its features' mean absolute attributions), from a `features.csv` table."""
    columns = [c for c in features.columns if c.startswith("mean_abs_")]
    mass = features.groupby("layer")[columns].sum()
    mass.columns = [c.removeprefix("mean_abs_") for c in columns]
    return mass / mass.sum().where(mass.sum() > 0, 1.0)


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


def plot_layer_attribution(shares: pd.DataFrame, path: str | Path) -> None:
    """Bars: per BERT layer the share of each class's attribution mass (`layer_shares`)."""
    names, layers = list(shares.columns), list(shares.index)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(layers) * len(names), 3.4))
    width = 0.8 / len(names)
    x = np.arange(len(layers))
    for k, name in enumerate(names):
        ax.bar(x + (k - (len(names) - 1) / 2) * width, 100 * shares[name], width, label=name)
    ax.set_xticks(x, [f"layer {layer}" for layer in layers])
    ax.set_ylabel("share of attribution mass (%)")
    ax.set_title("Attribution mass per BERT layer")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def write_feature_outputs(folder: str | Path, result, bundle) -> list[str]:
    """`features.csv` and the two figures into `folder`; their file names."""
    folder = Path(folder)
    table = feature_table(result, list(bundle.layers), bundle.classifier.transformer.pixels_)
    with atomic_path(folder / FEATURES_CSV) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    plot_attribution_map(result, folder / MAP_FIGURE)
    plot_layer_attribution(layer_shares(table), folder / LAYER_FIGURE)
    return [FEATURES_CSV, MAP_FIGURE, LAYER_FIGURE]
