"""textvision.report.layouts: the report's "Image layouts" section and figure, from mapping
files where the workflow writes them and the fit jobs' benchmark files."""

from __future__ import annotations

import numpy as np
import pandas as pd

from textvision.deepinsight.base import RasterTransformer
from textvision.deepinsight.store import save_mapping
from textvision.deepinsight.transformer import DeepInsightTransformer
from textvision.report.costs import read_costs
from textvision.report.layouts import (
    layouts_markdown,
    method_line,
    plot_layouts,
    read_layout,
    run_of,
)


def mapping(path, transformer, X, fit_on="train"):
    path.parent.mkdir(parents=True)
    save_mapping(transformer.fit(X), path, {"fit_on": fit_on, "n_fit_rows": len(X)})
    return path


def benchmark(path, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"s": [seconds], "max_rss": [100.0], "cpu_time": [seconds]}).to_csv(
        path, sep="\t", index=False
    )
    return path


def test_each_runs_layout_with_its_pixels_and_fit_seconds(tmp_path):
    X = np.random.default_rng(0).normal(size=(60, 30)).astype(np.float32)
    out = tmp_path / "run"
    main = mapping(out / "deepinsight/mapping.h5", DeepInsightTransformer(8, projector="pca"), X)
    raster = mapping(out / "variants/raster/deepinsight/mapping.h5", RasterTransformer(8), X)
    costs = read_costs(
        [
            benchmark(out / "benchmarks/fit_mapping/fit_mapping.tsv", 12.5),
            benchmark(out / "benchmarks/fit_mapping_variant/other.tsv", 99.0),
        ]
    )
    layouts = [read_layout(f, costs) for f in (main, raster)]
    assert [layout.run for layout in layouts] == ["main", "raster"]
    assert layouts[0].fit_seconds == 12.5 and layouts[1].fit_seconds is None
    assert layouts[1].counts.sum() == 30 and layouts[1].occupancy["pixels_used"] == 30
    assert layouts[1].occupancy["max_features_per_pixel"] == 1
    used = layouts[0].occupancy["pixels_used"]
    assert 1 <= used < 30 and layouts[0].counts.sum() == 30
    text = layouts_markdown(layouts)
    assert "## Image layouts" in text
    assert (
        f"| main | DeepInsight, projector pca, discretization bin | train (60 rows) | {used} / 64"
        in text
    )
    assert (
        "| raster | raster (features in their given order) | train (60 rows) | 30 / 64 | 1 |  |"
        in text
    )
    assert text.splitlines()[-2].endswith("| 12.5 |")
    plot_layouts(layouts, tmp_path / "layouts.png")
    assert (tmp_path / "layouts.png").read_bytes()[:4] == b"\x89PNG"


def test_run_names_come_from_the_workflows_paths():
    assert run_of("results/x/deepinsight/mapping.h5") == "main"
    assert run_of("results/x/variants/igtd/deepinsight/mapping.h5") == "igtd"
    assert run_of("mapping.h5") == "main"


def test_method_lines_name_each_projectors_own_settings():
    base = {"perplexity": 30, "metric": "euclidean", "discretization": "bin"}
    assert "perplexity 30" in method_line("deepinsight", {**base, "projector": "tsne"})
    assert "perplexity" not in method_line("deepinsight", {**base, "projector": "pca"})
    umap = {**base, "projector": "umap", "n_neighbors": 15, "min_dist": 0.1}
    line = method_line("deepinsight", {**umap, "umap_metric": "cosine"})
    assert "15 neighbours" in line and "metric cosine" in line and "perplexity" not in line
