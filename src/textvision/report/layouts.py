"""The report's "Image layouts" section and figure: every run's fitted image method (the main
run's and each variant's own `mapping.h5`): how it was fitted, the pixels its features use and
the seconds its fit took."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from textvision.core.figures import plt, save_figure
from textvision.core.io import attrs_dict, open_h5
from textvision.core.markdown import markdown_section, markdown_table

MAIN = "main"


@dataclass(frozen=True)
class Layout:
    """One fitted image method: the run it belongs to (`main` or a variant), the method in
    words, what it was fitted on, features per pixel `[P, P]`, the grid's use as the mapping
    file records it (`occupancy`: pixels used and total, most features in a pixel), its fit's
    wall seconds (None without a benchmark file)."""

    run: str
    method: str
    fit_on: str
    n_fit_rows: int
    counts: np.ndarray
    occupancy: dict
    fit_seconds: float | None


def method_line(method: str, params: dict) -> str:
    """The image method and its own settings, in words."""
    if method == "deepinsight":
        projector = params["projector"]
        if projector == "tsne":
            projector += f" (perplexity {params['perplexity']}, metric {params['metric']})"
        elif projector == "umap":
            projector += (
                f" ({params['n_neighbors']} neighbours, min_dist {params['min_dist']}, "
                f"metric {params['umap_metric']})"
            )
        return f"DeepInsight, projector {projector}, discretization {params['discretization']}"
    if method == "igtd":
        return (
            f"IGTD ({params['feature_distance']} feature distances, {params['error']} error, "
            f"at most {params['max_step']} steps)"
        )
    if method == "refined":
        return f"REFINED (MDS start, {params['hc_iterations']} hill-climbing iterations)"
    return "raster (features in their given order)"


def run_of(mapping: str | Path) -> str:
    """`main` for `<outdir>/deepinsight/mapping.h5`, the variant for
    `<outdir>/variants/<variant>/deepinsight/mapping.h5`."""
    parts = Path(mapping).parts
    return parts[-3] if len(parts) >= 4 and parts[-4] == "variants" else MAIN


def read_layout(mapping: str | Path, costs: pd.DataFrame) -> Layout:
    """`mapping.h5`'s layout; its fit's seconds from `costs` (`report.costs.read_costs`: rule
    `fit_mapping`, or `fit_mapping_variant` with the variant as its job)."""
    run = run_of(mapping)
    with open_h5(mapping, "feature_counts") as fh:
        info = attrs_dict(fh)
        counts = fh["feature_counts"][()]
    rule, job = ("fit_mapping", "fit_mapping") if run == MAIN else ("fit_mapping_variant", run)
    wall = costs.loc[(costs["rule"] == rule) & (costs["job"] == job), "wall_s"]
    return Layout(
        run=run,
        method=method_line(info["method"], info["params"]),
        fit_on=info["fit_on"],
        n_fit_rows=int(info["n_fit_rows"]),
        counts=counts,
        occupancy=info["occupancy"],
        fit_seconds=float(wall.iloc[-1]) if len(wall) and pd.notna(wall.iloc[-1]) else None,
    )


def layouts_markdown(layouts: list[Layout]) -> str:
    cells = []
    for layout in layouts:
        occ = layout.occupancy
        cells.append(
            [
                layout.run,
                layout.method,
                f"{layout.fit_on} ({layout.n_fit_rows:,} rows)",
                f"{occ['pixels_used']:,} / {occ['pixels_total']:,}",
                str(occ["max_features_per_pixel"]),
                "" if layout.fit_seconds is None else f"{layout.fit_seconds:,.1f}",
            ]
        )
    return markdown_section(
        "Image layouts",
        "Each run's fitted image method (`mapping.h5`; variants that change no image setting "
        "share the main run's): the pixels its features use and the wall seconds of its fit "
        "(the `fit_mapping` jobs' benchmark files; blank where a job has none).",
        markdown_table(
            ["run", "method", "fitted on", "pixels used", "most features in a pixel", "fit s"],
            cells,
        ),
    )


def plot_layouts(layouts: list[Layout], path: str | Path) -> None:
    """Features per pixel of every run's layout, side by side on one logarithmic colour scale;
    empty pixels white."""
    cols = min(len(layouts), 4)
    rows = -(-len(layouts) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.4 * rows), squeeze=False)
    norm = LogNorm(1, max(2, max(int(layout.counts.max()) for layout in layouts)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    for ax, layout in zip(axes.flat, layouts, strict=False):
        occ = layout.occupancy
        counts = np.ma.masked_equal(layout.counts, 0)
        im = ax.imshow(counts, cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_title(
            f"{layout.run}: {occ['pixels_used']}/{occ['pixels_total']} used, max "
            f"{occ['max_features_per_pixel']}",
            fontsize=8,
        )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[len(layouts) :]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, label="features per pixel", fraction=0.03)
    save_figure(fig, path)
