"""The report: every model's metrics in one table beside the paper's, and the figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from textvision.config.settings import ReportSettings
from textvision.config.variants import default_comparisons
from textvision.core.errors import InputError
from textvision.core.io import atomic_path, attrs_dict, open_h5, read_json
from textvision.core.markdown import markdown_section, markdown_table
from textvision.core.paper import PAPER_ACCURACY, PAPER_ACCURACY_ERROR, REPRODUCTION_ACCURACY
from textvision.core.registry import (
    DOMAIN_VARIANTS,
    RANDOM_WEIGHTS,
    REPORT_DOMAIN_FIGURE,
    REPORT_FIGURES,
    WEIGHTS_KINDS,
    png,
)
from textvision.data.store import read_dataset
from textvision.report.costs import costs_markdown, per_rule, read_costs
from textvision.report.explained import explained_markdown
from textvision.report.figures import (
    plot_accuracy,
    plot_comparisons,
    plot_confusion,
    plot_costs,
    plot_domain_shift,
)
from textvision.report.layouts import layouts_markdown, method_line, plot_layouts, read_layout
from textvision.report.stats import mcnemar, paired_bootstrap, seed_interval
from textvision.train.figures import plot_all_learning_curves
from textvision.train.predictions import read_predictions

METRICS = {  # report metric -> where a metrics.json holds it
    "test_accuracy": ("test_best", "accuracy"),
    "val_accuracy_best": ("val_best", "accuracy"),
    "val_accuracy_last": ("val_last", "accuracy"),
    "test_macro_f1": ("test_best", "macro_f1"),
    "test_roc_auc": ("test_best", "roc_auc"),
    "val_macro_f1": ("val_best", "macro_f1"),
    "val_roc_auc": ("val_best", "roc_auc"),
}
STATS = ("mean", "std", "ci_low", "ci_high", "seeds")
SETTINGS = (
    "weights",
    "method",
    "layout",
    "discretization",
    "normalization",
    "batchnorm",
    "trainable",
    "precision",
)
COLUMNS = [
    "model",
    "variant",
    "architecture",
    "feature_maps",
    "lr_head",
    "lr_classifier",
    *SETTINGS,
    "n_seeds",
    "seeds",
    *(f"{m}_{s}" for m in METRICS for s in STATS),
    "best_epoch_mean",
    "train_seconds_mean",
    "images_per_second_mean",
    "paper_val_accuracy",
    "reproduction_val_accuracy",
]


def _weights_label(weights: str) -> str:
    return weights if weights in (*WEIGHTS_KINDS, "n/a") else f"file:{Path(weights).name}"


def row_name(path: str | Path, metrics: dict) -> str:
    """`backbone`, or `variant/backbone` for a job under `.../variants/<variant>/`."""
    parts = Path(path).parts
    if "variants" in parts[:-1]:
        return f"{parts[parts.index('variants') + 1]}/{metrics['backbone']}"
    return metrics["backbone"]


def _metric(m: dict, where: tuple[str, str]):
    scores = m.get(where[0])
    return None if scores is None else scores.get(where[1])


def _row(name: str, ms: list[dict]) -> dict:
    first = ms[0]
    row = {
        "model": name,
        "variant": name.split("/")[0] if "/" in name else "main",
        "architecture": first["backbone"].split("@")[0],
        "feature_maps": first.get("feature_maps"),
        "lr_head": first.get("lr_head"),
        "lr_classifier": first.get("lr_classifier"),
        "weights": _weights_label(first["weights"]),
        **{k: first.get(k) for k in SETTINGS[1:]},
        "n_seeds": len(ms),
        "seeds": ";".join(str(m["seed"]) for m in ms),
        "label_names": first["label_names"],
        "histories": [m["history"] for m in ms],
        "confusion": first["val_last"]["confusion_matrix"],
    }
    for metric, where in METRICS.items():
        values = [_metric(m, where) for m in ms]
        interval = seed_interval(values)
        for end in ("ci_low", "ci_high"):  # every metric here lies in [0, 1]
            if interval[end] is not None:
                interval[end] = min(max(interval[end], 0.0), 1.0)
        row.update({f"{metric}_{k}": interval[k] for k in STATS[:-1]})
        row[f"{metric}_seeds"] = ";".join(f"{v:.6f}" for v in values) if interval["n"] else None
    for key in ("best_epoch", "train_seconds", "images_per_second"):
        values = [m[key] for m in ms if m.get(key) is not None]
        row[f"{key}_mean"] = float(np.mean(values)) if values else None
    row["paper_val_accuracy"] = PAPER_ACCURACY.get(first["backbone"])
    row["reproduction_val_accuracy"] = REPRODUCTION_ACCURACY.get(first["backbone"])
    return row


# what every metrics.json of a training job or the baseline holds, and the report reads
METRICS_KEYS = {"backbone": str, "seed": int, "val_best": dict, "label_names": list}


def read_metrics(path: str | Path) -> dict:
    """A training job's or the baseline's metrics.json, refused (naming the file and the key)
    when it is not one."""
    metrics = read_json(path)
    if not isinstance(metrics, dict):
        raise InputError(
            f"{path}: a JSON {type(metrics).__name__}; expected a metrics.json of a training job "
            "or the baseline (a JSON object)"
        )
    for key, kind in METRICS_KEYS.items():
        if not isinstance(metrics.get(key), kind):
            raise InputError(
                f"{path}: key {key!r} missing or not a {kind.__name__}; expected a metrics.json "
                "of a training job or the baseline"
            )
    return metrics


def collect(metrics_files: list[str | Path]) -> tuple[pd.DataFrame, dict]:
    """One row per model (seeds aggregated: mean, std, 95% t-interval, per-seed values), in
    the order first seen; and each row's metrics files."""
    runs: dict[str, list[dict]] = {}
    files: dict[str, list[Path]] = {}
    for path in metrics_files:
        m = read_metrics(path)
        name = row_name(path, m)
        runs.setdefault(name, []).append(m)
        files.setdefault(name, []).append(Path(path))
    for name in runs:
        order = np.argsort([m["seed"] for m in runs[name]], kind="stable")
        runs[name] = [runs[name][i] for i in order]
        files[name] = [files[name][i] for i in order]
    table = pd.DataFrame([_row(name, ms) for name, ms in runs.items()])
    return table, {"runs": runs, "files": files}


def headline_split(table: pd.DataFrame) -> str:
    """`test` when the run has test rows (the headline then is test accuracy at the epoch chosen
    on validation), else `val`."""
    return "test" if table["test_accuracy_mean"].notna().any() else "val"


def describe_run(
    dataset: str | Path, embeddings: str | Path, mapping: str | Path, runs: dict
) -> list[str]:
    """Header lines: data, embedding model and layers, DeepInsight settings, device."""
    _, meta = read_dataset(dataset)
    with open_h5(embeddings) as fh:
        emb = attrs_dict(fh)
        shape = fh["cls"].shape
    with open_h5(mapping) as fh:
        info = attrs_dict(fh)
    params = info["params"]
    kind = (
        "SYNTHETIC corpus (made by textvision, not real reviews)"
        if meta["synthetic"]
        else "real data"
    )
    counts = meta["counts"]
    split = meta["split"]
    how = (
        f"train/test from the source's column `{split['column']}`, validation carved out of "
        f"train (stratified, seed {split['seed']})"
        if split.get("column")
        else f"stratified, seed {split['seed']}"
    )
    devices = sorted({m.get("device", "cpu") for ms in runs.values() for m in ms if "device" in m})
    occ = info["occupancy"]
    return [
        f"- **Data**: `{meta['source']}`, {kind}; {sum(counts.values())} texts, classes "
        f"{meta['label_names']}; split train/val/test = {counts['train']}/{counts['val']}/"
        f"{counts['test']} ({how}); HTML breaks removed: {meta['clean_html']}",
        f"- **Embeddings**: `{emb['model']}`, `[CLS]` of layers {emb['layers']}, max_length "
        f"{emb['max_length']}, tensor {list(shape)}",
        f"- **Images** (main run): {method_line(info['method'], params)}, fitted on "
        f"**{info['fit_on']}** rows ({info['n_fit_rows']}), scaler {params['scaler']}, "
        f"{params['pixels']}x{params['pixels']} pixels, layout {params['layout']}: "
        f"{occ['pixels_used']}/{occ['pixels_total']} pixels used, max "
        f"{occ['max_features_per_pixel']} features per pixel",
        f"- **Device**: {', '.join(devices) or 'n/a'}",
    ]


def _fmt(value, digits=3) -> str:
    """A table cell: blank for missing values, `digits` decimals for floats (0 for counts)."""
    if value is None or pd.isna(value):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _interval(row: dict, metric: str) -> str:
    """`mean [low, high]` (95% t-interval over seeds), or the single value."""
    mean, low, high = (row[f"{metric}_{k}"] for k in ("mean", "ci_low", "ci_high"))
    if mean is None or pd.isna(mean):
        return ""
    return f"{mean:.3f}" + (f" [{low:.3f}, {high:.3f}]" if pd.notna(low) else "")


def _pm(row: dict, metric: str) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    return _fmt(mean) + (f" ± {std:.3f}" if pd.notna(std) else "")


def _what(row: dict) -> str:
    """The weights and the DeepInsight/training choices that differ from the usual ones."""
    random = row["weights"] == RANDOM_WEIGHTS
    parts = [row["weights"] + (" (random init: no transfer)" if random else "")]
    if isinstance(row.get("method"), str) and row["method"] != "deepinsight":
        parts.append(row["method"])
    if row.get("layout") == "shuffled":
        parts.append("shuffled layout")
    if row.get("discretization") == "assignment":
        parts.append("assignment")
    if row.get("batchnorm") == "adapt":
        parts.append("BatchNorm adapted")
    if row.get("trainable") in ("last", "all"):
        parts.append(f"slice trained ({row['trainable']})")
    if row.get("precision") == "bfloat16":
        parts.append("bfloat16")
    return ", ".join(p for p in parts if p)


def _result_cells(row: dict, split: str, metric: str) -> list:
    """A row of the results table as the cells of `to_markdown`'s table (`metric`: the
    headline)."""
    paper = (
        f"{row['paper_val_accuracy']:.2f} ± {PAPER_ACCURACY_ERROR:.2f}"
        if pd.notna(row["paper_val_accuracy"])
        else ""
    )
    return [
        row["model"],
        _what(row),
        _fmt(row["feature_maps"], 0),
        row["n_seeds"],
        _interval(row, metric),
        _pm(row, "val_accuracy_best"),
        _pm(row, "val_accuracy_last"),
        _fmt(row[f"{split}_macro_f1_mean"]),
        _fmt(row[f"{split}_roc_auc_mean"]),
        _fmt(row["train_seconds_mean"], 1),
        paper,
        _fmt(row["reproduction_val_accuracy"]),
    ]


def to_markdown(table: pd.DataFrame, header: list[str]) -> str:
    split = headline_split(table)
    head = "**test acc** [95% CI]" if split == "test" else "**val acc (best)** [95% CI]"
    metric = "test_accuracy" if split == "test" else "val_accuracy_best"
    columns = [
        "model", "weights, layout", "maps", "seeds", head, "val acc (best)", "val acc (last)",
        f"macro F1 ({split})", f"ROC-AUC ({split})", "train s", "paper", "reproduction",
    ]  # fmt: skip
    rows = [_result_cells(row, split, metric) for row in table.to_dict("records")]
    lines = [
        "# textvision results",
        "",
        *header,
        "",
        markdown_table(columns, rows),
    ]
    headline = (
        "The headline is **test** accuracy of the epoch chosen on validation (the test rows "
        "took no part in any choice); validation accuracies beside it are optimistic (*best* "
        "is the epoch validation chose, *last* the final epoch)."
        if split == "test"
        else "No test rows: the headline is validation accuracy of the best epoch, chosen on "
        "those same rows, so optimistic; set `data.split.test` or `data.split.column` for a "
        "test set."
    )
    lines += [
        "",
        f"{headline} Intervals: 95% Student-t over seeds, clipped to [0, 1] (mean ± std "
        "elsewhere). Paper: Benarab, arXiv 2106.12479, validation accuracy of "
        "bert-base-uncased on all 50,000 IMDB reviews (not comparable with a test accuracy on "
        "other data).",
    ]
    return "\n".join(lines) + "\n"


def _correct(files: list[Path], split: str, label_names: list[str]) -> tuple[list, np.ndarray]:
    """The ids (sorted) and the `[runs, n]` correctness of a row's predictions on `split`."""
    ids, rows = None, []
    for path in files:
        table = read_predictions(path.with_name("predictions.parquet"))
        table = table[table["split"] == split].sort_values("id", kind="stable")
        if ids is None:
            ids = table["id"].tolist()
        elif table["id"].tolist() != ids:
            raise InputError(f"{path}: predictions of other {split} rows than its row's others")
        rows.append((table["label"] == table["predicted"]).to_numpy())
    return ids, np.stack(rows)


def compare_rows(
    table: pd.DataFrame, files: dict, pairs: list[list[str]], n_boot: int, seed: int
) -> pd.DataFrame:
    """Paired comparisons on the headline split: difference in accuracy (a - b) with a 95%
    paired-bootstrap interval, and McNemar's exact test on the pooled predictions."""
    split = headline_split(table)
    known = table["model"].tolist()
    out = []
    for a, b in pairs:
        for name in (a, b):
            if name not in known:
                raise InputError(f"comparison [{a}, {b}]: no row {name!r}; rows are {known}")
        ids_a, ca = _correct(files[a], split, table["label_names"].iloc[0])
        ids_b, cb = _correct(files[b], split, table["label_names"].iloc[0])
        if ids_a != ids_b:
            raise InputError(f"comparison [{a}, {b}]: the rows scored different {split} rows")
        boot = paired_bootstrap(ca, cb, n_boot=n_boot, seed=seed)
        test = mcnemar(ca, cb)
        out.append(
            {
                "a": a,
                "b": b,
                "split": split,
                "n_examples": boot["n_examples"],
                "runs_a": len(ca),
                "runs_b": len(cb),
                "accuracy_a": float(ca.mean()),
                "accuracy_b": float(cb.mean()),
                "difference": boot["difference"],
                "ci_low": boot["ci_low"],
                "ci_high": boot["ci_high"],
                "a_only": test["a_only"],
                "b_only": test["b_only"],
                "p_value": test["p_value"],
            }
        )
    return pd.DataFrame(out, columns=COMPARISON_COLUMNS)


COMPARISON_COLUMNS = [
    "a", "b", "split", "n_examples", "runs_a", "runs_b", "accuracy_a", "accuracy_b",
    "difference", "ci_low", "ci_high", "a_only", "b_only", "p_value",
]  # fmt: skip


def comparisons_markdown(comparisons: pd.DataFrame, n_boot: int) -> str:
    if comparisons.empty:
        return ""
    split = comparisons["split"].iloc[0]
    columns = [
        "a", "b", f"{split} acc a", f"{split} acc b", "a − b [95% CI]", "a only / b only right",
        "McNemar p",
    ]  # fmt: skip
    rows = [
        [
            row["a"],
            row["b"],
            f"{row['accuracy_a']:.3f}",
            f"{row['accuracy_b']:.3f}",
            f"{row['difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]",
            f"{row['a_only']} / {row['b_only']}",
            f"{row['p_value']:.3g}",
        ]
        for row in comparisons.to_dict("records")
    ]
    return markdown_section(
        "Paired comparisons",
        f"Each pair is scored on the same {split} examples. Difference: mean accuracy of a over "
        f"its seeds minus that of b; 95% interval: paired bootstrap ({n_boot} replicates) "
        "resampling the examples (the same ones for both) and each side's seeds; McNemar: "
        "exact binomial test of the discordant examples, pooled over paired seeds (a right and "
        "b wrong vs a wrong and b right). An interval that excludes 0 is a difference the data "
        "support; one that contains 0 is not evidence either way. Figure: `comparisons.png`.",
        markdown_table(columns, rows),
    )


def collect_domain(domain_files: list[str | Path]) -> tuple[list[dict], list[str]]:
    """One row per backbone, slice (weights) and variant of the domain-shift step's JSON files,
    plus the natural-halves noise floor; and one line per file saying what was compared."""
    rows, sources = [], []
    for path in domain_files:
        d = read_json(path)
        ref, text = d["reference"], d["text"]
        sources.append(
            f"`{d['backbone']}`: reference `{ref['reference']}` ({ref['n_images']} natural crops "
            f"of {ref['size']}x{ref['size']} from {len(ref['photos'])} photos), "
            f"{text['n_images']} of {text['n_train']} training text images"
        )
        for sl in d["slices"]:
            base = {"backbone": d["backbone"], "weights": _weights_label(sl["weights"])}
            for variant in DOMAIN_VARIANTS:
                values = sl["variants"][variant]
                rows.append({**base, "variant": variant, **_pick(values)})
            noise = {"frechet": sl["natural_halves_frechet"], "frechet_relative": None}
            noise["bn_kl"] = None
            rows.append({**base, "variant": "natural vs natural (noise floor)", **noise})
    return rows, sources


def _pick(values: dict) -> dict:
    keys = ("frechet", "frechet_relative", "bn_kl")
    return {k: values.get(k) for k in keys}


def _distance(value) -> str:
    """A distance of the domain-shift table: 4 significant digits, blank where missing."""
    if isinstance(value, str):
        return value
    return "" if value is None else f"{value:.4g}"


def domain_markdown(rows: list[dict], sources: list[str]) -> str:
    """The "Domain shift" section of results.md."""
    cells = [
        [
            row["backbone"],
            row["weights"],
            row["variant"],
            _distance(row["frechet"]),
            _distance(row["bn_kl"]),
            _distance(row["frechet_relative"]),
        ]
        for row in rows
    ]
    return markdown_section(
        "Domain shift",
        "How far the text images are from natural photographs, per backbone slice: Fréchet "
        "distance between the slice's outputs (average-pooled) on text and natural images, and "
        "the mean over BatchNorm layers and channels of KL(text batch statistics || running "
        "statistics). Variants: `raw` (no normalisation), `zscore` (the paper's), `pixel` "
        "(per-pixel), `adapted` (Z-normalised, BatchNorm statistics re-estimated on the text "
        "images); rows with weights `none` are the no-transfer reference point. Distances are "
        "in the units of each slice's features; the last column divides them by the natural "
        "features' total variance, Tr(S), which compares slices and variants of other scales.",
        "\n".join(f"- {line}" for line in sources),
        markdown_table(
            ["backbone", "weights", "variant", "Fréchet distance", "mean BN KL", "Fréchet / Tr(S)"],
            cells,
        ),
    )


def build_report(
    metrics_files: list[str | Path],
    dataset: str | Path,
    embeddings: str | Path,
    mapping: str | Path,
    outdir: str | Path,
    settings: ReportSettings,
    domain_files: list[str | Path] = (),
    benchmarks: list[str | Path] = (),
    explain: list[str | Path] = (),
    layouts: list[str | Path] = (),
) -> pd.DataFrame:
    """Write results.csv, results.md, comparisons.csv and the figures (accuracy,
    learning_curves, confusion, comparisons); an "Image layouts" section and layouts.png of
    `mapping` and the variants' own mapping files (`layouts`); with the domain-shift step's JSON
    files, a "Domain shift" section and domain_shift.png; with Snakemake's benchmark files, a
    "Cost per rule" section, costs.png (a job without its file is counted as such) and the
    layouts' fit times; with `textvision explain` folders' `index.html` files, an "Explained
    predictions" section linking them. Each metrics file's `predictions.parquet` beside it feeds
    the paired comparisons (`settings.comparisons`; empty: `default_comparisons`)."""
    outdir = Path(outdir)
    figures = {name: outdir / png(name) for name in (*REPORT_FIGURES, REPORT_DOMAIN_FIGURE)}
    table, found = collect(metrics_files)
    pairs = settings.comparisons or default_comparisons(table["model"].tolist())
    comparisons = compare_rows(table, found["files"], pairs, settings.bootstrap, settings.seed)
    header = describe_run(dataset, embeddings, mapping, found["runs"])
    text = to_markdown(table, header) + comparisons_markdown(comparisons, settings.bootstrap)
    if domain_files:
        rows, sources = collect_domain(domain_files)
        text += domain_markdown(rows, sources)
        plot_domain_shift(rows, figures[REPORT_DOMAIN_FIGURE])
    found = [f for f in benchmarks if Path(f).exists()]
    costs = read_costs(found)
    fitted = [read_layout(f, costs) for f in (mapping, *layouts)]
    text += layouts_markdown(fitted)
    plot_layouts(fitted, figures["layouts"])
    if benchmarks:
        text += costs_markdown(costs, missing=len(benchmarks) - len(found))
        plot_costs(per_rule(costs), figures["costs"])
    if explain:
        text += explained_markdown(explain, outdir)
    with atomic_path(outdir / "results.csv") as tmp:
        table[COLUMNS].to_csv(tmp, index=False)
    with atomic_path(outdir / "comparisons.csv") as tmp:
        comparisons.to_csv(tmp, index=False)
    with atomic_path(outdir / "results.md") as tmp:
        tmp.write_text(text)
    plot_accuracy(table, headline_split(table), figures["accuracy"])
    plot_all_learning_curves(
        {r["model"]: r["histories"][0] for r in table.to_dict("records") if r["histories"][0]},
        figures["learning_curves"],
    )
    plot_confusion(
        dict(zip(table["model"], table["confusion"], strict=True)),
        table["label_names"].iloc[0],
        figures["confusion"],
    )
    plot_comparisons(comparisons.to_dict("records"), figures["comparisons"])
    return table
