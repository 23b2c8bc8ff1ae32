"""The report: every model's metrics in one table beside the paper's, and the figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from textvision.dataset import read_dataset
from textvision.errors import InputError
from textvision.io import atomic_path, attrs_dict, open_h5, read_json
from textvision.paper import PAPER_ACCURACY, PAPER_ACCURACY_ERROR, REPRODUCTION_ACCURACY
from textvision.plots import (
    plot_accuracy,
    plot_all_learning_curves,
    plot_confusion,
    plot_domain_shift,
)

COLUMNS = [
    "model",
    "architecture",
    "feature_maps",
    "lr_head",
    "lr_classifier",
    "weights",
    "n_seeds",
    "val_accuracy_last_mean",
    "val_accuracy_last_std",
    "val_accuracy_best_mean",
    "val_accuracy_best_std",
    "macro_f1_mean",
    "roc_auc_mean",
    "train_seconds_mean",
    "images_per_second_mean",
    "paper_val_accuracy",
    "reproduction_val_accuracy",
    "batchnorm",
]


def _weights_label(weights: str) -> str:
    return weights if weights in ("imagenet", "none", "n/a") else f"file:{Path(weights).name}"


def collect(metrics_files: list[str | Path]) -> tuple[pd.DataFrame, dict]:
    """One row per model (seeds aggregated), in the order first seen; and the raw metrics."""
    runs: dict[str, list[dict]] = {}
    for path in metrics_files:
        m = read_json(path)
        runs.setdefault(m["backbone"], []).append(m)
    rows = []
    for name, ms in runs.items():
        arch = name.split("@")[0]

        def agg(key, ms=ms):
            values = [m[key] for m in ms if m.get(key) is not None]
            return (
                float(np.mean(values)) if values else None,
                float(np.std(values, ddof=1)) if len(values) > 1 else None,
            )

        def agg_val(key, ms=ms):
            values = [m["val_last"][key] for m in ms if m["val_last"].get(key) is not None]
            return float(np.mean(values)) if values else None

        last, best = agg("val_accuracy_last"), agg("val_accuracy_best")
        rows.append(
            {
                "model": name,
                "architecture": arch,
                "feature_maps": ms[0].get("feature_maps"),
                "lr_head": ms[0].get("lr_head"),
                "lr_classifier": ms[0].get("lr_classifier"),
                "weights": _weights_label(ms[0]["weights"]),
                "n_seeds": len(ms),
                "val_accuracy_last_mean": last[0],
                "val_accuracy_last_std": last[1],
                "val_accuracy_best_mean": best[0],
                "val_accuracy_best_std": best[1],
                "macro_f1_mean": agg_val("macro_f1"),
                "roc_auc_mean": agg_val("roc_auc"),
                "train_seconds_mean": agg("train_seconds")[0],
                "images_per_second_mean": agg("images_per_second")[0],
                "paper_val_accuracy": PAPER_ACCURACY.get(name),
                "reproduction_val_accuracy": REPRODUCTION_ACCURACY.get(name),
                "batchnorm": ms[0].get("batchnorm"),
                "label_names": ms[0]["label_names"],
            }
        )
    return pd.DataFrame(rows), runs


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
    devices = sorted({m.get("device", "cpu") for ms in runs.values() for m in ms if "device" in m})
    occ = info["occupancy"]
    return [
        f"- **Data**: `{meta['source']}`, {kind}; {sum(counts.values())} texts, classes "
        f"{meta['label_names']}; split train/val/test = {counts['train']}/{counts['val']}/"
        f"{counts['test']} (stratified, seed {meta['split']['seed']}); HTML breaks removed: "
        f"{meta['clean_html']}",
        f"- **Embeddings**: `{emb['model']}`, `[CLS]` of layers {emb['layers']}, max_length "
        f"{emb['max_length']}, tensor {list(shape)}",
        f"- **DeepInsight**: fitted on **{info['fit_on']}** rows ({info['n_fit_rows']}), scaler "
        f"{params['scaler']}, projector {params['projector']} (perplexity "
        f"{params['perplexity']}, metric {params['metric']}), {params['pixels']}x"
        f"{params['pixels']} pixels, discretization {params['discretization']}: "
        f"{occ['pixels_used']}/{occ['pixels_total']} pixels used, max "
        f"{occ['max_features_per_pixel']} features per pixel",
        f"- **Device**: {', '.join(devices) or 'n/a'}",
    ]


def _fmt(value, digits=3) -> str:
    """A table cell: blank for missing values, `digits` decimals for floats (0 for counts)."""
    if value is None or pd.isna(value):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def to_markdown(table: pd.DataFrame, header: list[str]) -> str:
    lines = [
        "# textvision results",
        "",
        *header,
        "",
        "| model | maps | lr head / clf | weights | seeds | val acc (last) | val acc (best) "
        "| macro F1 | ROC-AUC | train s | images/s | paper | reproduction |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.to_dict("records"):

        def pm(key, row=row):
            mean, std = row[f"{key}_mean"], row[f"{key}_std"]
            return _fmt(mean) + (f" ± {std:.3f}" if pd.notna(std) else "")

        lr = f"{row['lr_head']:g} / {row['lr_classifier']:g}" if pd.notna(row["lr_head"]) else ""
        weights = row["weights"] + (
            " (random init: no transfer)" if row["weights"] == "none" else ""
        )
        weights += " (BatchNorm adapted)" if row.get("batchnorm") == "adapt" else ""
        paper = (
            f"{row['paper_val_accuracy']:.2f} ± {PAPER_ACCURACY_ERROR:.2f}"
            if pd.notna(row["paper_val_accuracy"])
            else ""
        )
        lines.append(
            f"| {row['model']} | {_fmt(row['feature_maps'], 0)} | {lr} | {weights} "
            f"| {row['n_seeds']} | {pm('val_accuracy_last')} | {pm('val_accuracy_best')} "
            f"| {_fmt(row['macro_f1_mean'])} "
            f"| {_fmt(row['roc_auc_mean'])} | {_fmt(row['train_seconds_mean'], 1)} "
            f"| {_fmt(row['images_per_second_mean'], 1)} | {paper} "
            f"| {_fmt(row['reproduction_val_accuracy'])} |"
        )
    lines += [
        "",
        "Validation accuracy: *last* is the final epoch's, *best* the best epoch's "
        "(selected on validation, so optimistic). Paper: Benarab, arXiv 2106.12479, "
        "bert-base-uncased on all 50,000 IMDB reviews.",
    ]
    return "\n".join(lines) + "\n"


DOMAIN_VARIANTS = ("raw", "zscore", "pixel", "adapted")


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


def _cell(value) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None else f"{value:.4g}"


def domain_markdown(rows: list[dict], sources: list[str]) -> str:
    """The "Domain shift" section of results.md."""
    lines = [
        "",
        "## Domain shift",
        "",
        "How far the text images are from natural photographs, per backbone slice: Fréchet "
        "distance between the slice's outputs (average-pooled) on text and natural images, and "
        "the mean over BatchNorm layers and channels of KL(text batch statistics || running "
        "statistics). Variants: `raw` (no normalisation), `zscore` (the paper's), `pixel` "
        "(per-pixel), `adapted` (Z-normalised, BatchNorm statistics re-estimated on the text "
        "images); rows with weights `none` are the no-transfer reference point. Distances are "
        "in the units of each slice's features; the last column divides them by the natural "
        "features' total variance, Tr(S), which compares slices and variants of other scales.",
        "",
        *[f"- {line}" for line in sources],
        "",
        "| backbone | weights | variant | Fréchet distance | mean BN KL | Fréchet / Tr(S) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['backbone']} | {row['weights']} | {row['variant']} "
            f"| {_cell(row['frechet'])} | {_cell(row['bn_kl'])} "
            f"| {_cell(row['frechet_relative'])} |"
        )
    return "\n".join(lines) + "\n"


def build_report(
    metrics_files: list[str | Path],
    dataset: str | Path,
    embeddings: str | Path,
    mapping: str | Path,
    outdir: str | Path,
    domain_files: list[str | Path] = (),
) -> pd.DataFrame:
    """Write results.csv, results.md, accuracy.png, learning_curves.png, confusion.png; with
    the domain-shift step's JSON files, a "Domain shift" section and domain_shift.png."""
    outdir = Path(outdir)
    table, runs = collect(metrics_files)
    header = describe_run(dataset, embeddings, mapping, runs)
    text = to_markdown(table, header)
    if domain_files:
        rows, sources = collect_domain(domain_files)
        text += domain_markdown(rows, sources)
        plot_domain_shift(rows, outdir / "domain_shift.png")
    with atomic_path(outdir / "results.csv") as tmp:
        table[COLUMNS].to_csv(tmp, index=False)
    with atomic_path(outdir / "results.md") as tmp:
        tmp.write_text(text)
    plot_accuracy(table, outdir / "accuracy.png")
    plot_all_learning_curves(
        {n: ms[0]["history"] for n, ms in runs.items() if ms[0]["history"]},
        outdir / "learning_curves.png",
    )
    plot_confusion(
        {n: ms[0]["val_last"]["confusion_matrix"] for n, ms in runs.items()},
        table["label_names"].iloc[0],
        outdir / "confusion.png",
    )
    return table


def compare_runs(runs: list[tuple[str, str | Path]], out: str | Path) -> pd.DataFrame:
    """Stack the `results.csv` of several runs (variants of one setup) under a `run` column."""
    frames = []
    for label, path in runs:
        try:
            frame = pd.read_csv(path)
        except FileNotFoundError as err:
            raise InputError(f"{path}: results table of run {label!r} not found") from err
        frames.append(frame.assign(run=label).reindex(columns=["run", *COLUMNS]))
    table = pd.concat(frames, ignore_index=True)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return table
