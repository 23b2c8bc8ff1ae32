"""The report's figures: accuracy against the paper, confusion matrices, the domain shift per
backbone, paired comparisons and the cost per rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from textvision.core.figures import plt, save_figure
from textvision.core.registry import DOMAIN_INPUTS, DOMAIN_VARIANTS


def plot_accuracy(table: pd.DataFrame, split: str, path: str | Path) -> None:
    """Headline accuracy per model (`split`: test, or validation at the best epoch): mean over
    seeds with its 95% interval; the best epoch's validation accuracy and the paper's values
    marked."""
    metric = "test_accuracy" if split == "test" else "val_accuracy_best"
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(table)), 3.8))
    x = np.arange(len(table))
    mean = table[f"{metric}_mean"].astype(float)
    low = (mean - table[f"{metric}_ci_low"].astype(float)).fillna(0)
    high = (table[f"{metric}_ci_high"].astype(float) - mean).fillna(0)
    label = "test accuracy" if split == "test" else "validation accuracy (best epoch)"
    ax.bar(x, mean, yerr=[low, high], capsize=4, color="#4c72b0", label=f"{label}, 95% CI")
    if split == "test":
        ax.scatter(
            x,
            table["val_accuracy_best_mean"],
            marker="_",
            s=300,
            color="black",
            zorder=3,
            label="validation (best epoch)",
        )
    for col, marker, color, name in (
        ("paper_val_accuracy", "D", "#c44e52", "paper (validation)"),
        ("reproduction_val_accuracy", "o", "#55a868", "published reproduction"),
    ):
        if table[col].notna().any():
            ax.scatter(x, table[col], marker=marker, color=color, zorder=4, label=name)
    ax.set_xticks(x, table["model"], rotation=30, ha="right")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.axhline(
        1 / max(len(table["label_names"].iloc[0]), 2), color="grey", ls=":", lw=1, label="chance"
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def plot_confusion(
    matrices: dict[str, list[list[int]]], label_names: list[str], path: str | Path
) -> None:
    """Validation confusion matrices (last epoch, first seed) of every model."""
    n = len(matrices)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, matrix) in zip(axes.ravel(), matrices.items(), strict=False):
        matrix = np.asarray(matrix)
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                str(value),
                ha="center",
                va="center",
                color="white" if value > matrix.max() / 2 else "black",
                fontsize=8,
            )
        ax.set_xticks(range(len(label_names)), label_names, fontsize=7)
        ax.set_yticks(range(len(label_names)), label_names, fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    save_figure(fig, path)


def plot_domain_shift(rows: list[dict], path: str | Path) -> None:
    """Fréchet distance to natural images per backbone slice (backbone, weights) and input
    variant, across backbones; dashes mark each slice's natural-vs-natural noise floor."""
    variants = list(DOMAIN_VARIANTS)
    colours = {variant: DOMAIN_INPUTS[variant].colour for variant in variants}
    groups = list(dict.fromkeys((r["backbone"], r["weights"]) for r in rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(groups)), 4))
    width = 0.8 / len(variants)
    for i, group in enumerate(groups):
        for row in (r for r in rows if (r["backbone"], r["weights"]) == group):
            if isinstance(row["frechet"], str):
                continue
            if row["variant"] not in colours:  # the noise floor
                ax.hlines(row["frechet"], i - 0.4, i + 0.4, colors="black", linestyles="dashed")
                continue
            j = variants.index(row["variant"])
            x = i + (j - (len(variants) - 1) / 2) * width
            ax.bar(x, row["frechet"], width, color=colours[row["variant"]])
    labels = [f"{backbone}\n({weights})" for backbone, weights in groups]
    ax.set_xticks(range(len(groups)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("Fréchet distance to natural images")
    ax.set_yscale("symlog", linthresh=1e-3)
    numbers = [r["frechet"] for r in rows if not isinstance(r["frechet"], str)]
    ax.set_ylim(0, 3 * max(numbers, default=1.0))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(
        handles=[Patch(color=colour, label=variant) for variant, colour in colours.items()],
        fontsize=7,
        title="dashed: natural vs natural",
        title_fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
    )
    save_figure(fig, path)


def plot_comparisons(rows: list[dict], out: str | Path) -> None:
    """Forest plot: per comparison the accuracy difference a - b with its interval, p at right."""
    if not rows:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, "no comparisons", ha="center", va="center")
        ax.axis("off")
        save_figure(fig, out)
        return
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.45 * len(rows)))
    y = np.arange(len(rows))[::-1]  # first row on top
    for yi, row in zip(y, rows, strict=True):
        if row.get("ci_low") is not None and row.get("ci_high") is not None:
            ax.hlines(yi, row["ci_low"], row["ci_high"], color="#4c72b0", lw=2)
        if row.get("difference") is not None:
            ax.plot(row["difference"], yi, "o", color="#4c72b0", zorder=3)
        p = row.get("p_value")
        label = "p = n/a" if p is None else "p < 0.001" if p < 0.001 else f"p = {p:.3g}"
        ax.text(1.02, yi, label, transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    ax.axvline(0, color="grey", ls="--", lw=1)
    ax.set_yticks(y, [f"{row['a']} − {row['b']}" for row in rows], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("difference in test accuracy (a − b), 95% interval")
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, out)


def plot_costs(rules: pd.DataFrame, path: str | Path) -> None:
    """Per rule: wall time and CPU time summed over its jobs, and the largest peak memory."""
    fig, (ax_time, ax_mem) = plt.subplots(
        1, 2, figsize=(10, 0.45 * len(rules) + 1.6), sharey=True, squeeze=True
    )
    y = np.arange(len(rules))
    ax_time.barh(y - 0.2, rules["wall_s_total"] / 60, 0.4, color="#4c72b0", label="wall")
    ax_time.barh(
        y + 0.2,
        rules["cpu_s_total"].fillna(0) / 60,
        0.4,
        color="#dd8452",
        label="CPU (all threads)",
    )
    ax_time.set_yticks(y, [f"{r} ({n})" for r, n in zip(rules["rule"], rules["jobs"], strict=True)])
    ax_time.invert_yaxis()
    ax_time.set_xlabel("minutes, summed over the rule's jobs")
    ax_time.legend(fontsize=7)
    ax_mem.barh(y, rules["max_rss_mb"].fillna(0), color="#55a868")
    ax_mem.set_xlabel("peak resident memory of the largest job (MB)")
    for ax in (ax_time, ax_mem):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("cost per rule (jobs in brackets)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
