"""The `train` step's figure: a model's learning curves (and all models' side by side)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from textvision.core.figures import plt, save_figure


def plot_learning_curve(history: list[dict], path: str | Path, title: str) -> None:
    frame = pd.DataFrame(history)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    _curves(ax_loss, ax_acc, frame, "")
    fig.suptitle(title)
    save_figure(fig, path)


def _curves(ax_loss, ax_acc, frame: pd.DataFrame, label: str, color=None) -> None:
    prefix = f"{label} " if label else ""
    ax_loss.plot(frame["epoch"], frame["train_loss"], "--", color=color, label=f"{prefix}train")
    ax_loss.plot(frame["epoch"], frame["val_loss"], "-", color=color, label=f"{prefix}val")
    ax_acc.plot(frame["epoch"], frame["train_accuracy"], "--", color=color, label=f"{prefix}train")
    ax_acc.plot(frame["epoch"], frame["val_accuracy"], "-", color=color, label=f"{prefix}val")
    for ax, name in ((ax_loss, "cross-entropy"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7)


def plot_all_learning_curves(histories: dict[str, list[dict]], path: str | Path) -> None:
    """One sheet: loss and accuracy per epoch of every backbone (first seed), train dashed."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    for i, (name, history) in enumerate(histories.items()):
        _curves(ax_loss, ax_acc, pd.DataFrame(history), name, colors[i % 10])
    fig.suptitle("Learning curves (dashed: train, solid: validation)")
    save_figure(fig, path)
