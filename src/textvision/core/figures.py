"""What every figure shares: matplotlib without a screen, the colour scale's top, PNG writing."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from textvision.core.io import atomic_path  # noqa: E402


def robust_max(images: np.ndarray) -> float | None:
    """Colour scale top: the 99.5th percentile, so one outlier feature does not blacken the rest."""
    return float(np.percentile(images, 99.5)) or None


def save_figure(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
