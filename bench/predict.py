"""Prediction: raw review text -> class probabilities through a model bundle (`textvision
predict`), against the embedding step alone on the same reviews (the ceiling: predicting embeds
first), and its memory on n and 4n texts (1,000 and 4,000 by default: it streams, so memory
should not grow)."""

from __future__ import annotations

from pathlib import Path

from bench.common import IMDB_EMBEDDINGS, REPO, log, median, ratio, repeat, worker

BUNDLE = REPO / "results" / "imdb" / "train" / "resnet18@layer1" / "seed0" / "bundle"
MEMORY_MARGIN_MB = 64


def ensure_bundle(args) -> Path:
    """The real run's ResNet-18 bundle (`config/imdb.yaml`) when present, else one made here:
    DeepInsight on the real-review embeddings, AlexNet with random weights, one epoch."""
    if args.bundle:
        return args.bundle
    if (BUNDLE / "bundle.json").exists():
        return BUNDLE
    from bench.common import ensure_embeddings
    from textvision.config.settings import MappingSettings, TrainSettings
    from textvision.deepinsight.fit import fit_mapping
    from textvision.deepinsight.render import render_images
    from textvision.train.step import train_backbone

    out = args.out / "predict_model"
    bundle = out / "train" / "bundle"
    if not (bundle / "bundle.json").exists():
        embeddings = ensure_embeddings(None, 2000, args.out, args.imdb, args.threads)
        log.info("training a bundle for the prediction rows from %s", embeddings)
        out.mkdir(parents=True, exist_ok=True)
        fit_mapping(embeddings, out / "mapping.h5", MappingSettings.make(), args.threads)
        render_images(embeddings, out / "mapping.h5", out / "images.h5", args.threads)
        settings = TrainSettings.make(backbone="alexnet", weights="none", epochs=1, upsample=1)
        train_backbone(
            out / "images.h5", out / "train", settings, backbone="alexnet", seed=0,
            mapping=out / "mapping.h5",
        )  # fmt: skip
    return bundle


def write_inputs(args, sizes) -> dict[int, str]:
    """Per size a Parquet file of that many real reviews, written here, not in the measured
    worker (reading the whole IMDB table there would add its own memory to the peak)."""
    import pandas as pd

    from bench.common import imdb_texts

    paths = {}
    for n in sizes:
        paths[n] = str(args.out / f"predict_input_{n}.parquet")
        pd.DataFrame({"text": imdb_texts(n, args.imdb, seed=1)}).to_parquet(paths[n])
    return paths


def run(args) -> dict:
    bundle = ensure_bundle(args)
    n = args.predict_n
    sizes = (n, 4 * n)
    inputs = write_inputs(args, sizes)
    common = {"bundle": str(bundle), "out": str(args.out)}
    res = repeat(
        args.runs,
        args.threads,
        [
            ("embed", "embed_ours", {"imdb": str(args.imdb), "model": _encoder(bundle),
                                     "layers": _layers(bundle), "n": n}),
            ("predict", "predict_ours", {**common, "n": n, "source": inputs[n]}),
        ],
    )  # fmt: skip
    t_embed = median(r["seconds"] for r in res["embed"])
    t_predict = median(r["seconds"] for r in res["predict"])
    share = t_embed / t_predict
    rows = [
        [
            "prediction, CPU",
            f"{n} real IMDB reviews, raw text -> probabilities, bundle "
            f"`{bundle.relative_to(REPO) if bundle.is_relative_to(REPO) else bundle}`, "
            f"{args.threads} threads",
            f"{n / t_embed:.1f} texts/s (embedding alone)",
            f"{n / t_predict:.1f} texts/s",
            ratio(share),
            ">= 0.8x the embedding alone",
            "yes" if share >= 0.8 else "**no**",
            "reference = the ceiling: predicting embeds first, then DeepInsight, network",
        ]
    ]
    memory = {
        size: [
            worker("predict_ours", args.threads, run=r, **common, n=size, source=inputs[size])
            for r in range(args.runs)
        ]
        for size in sizes
    }
    peaks = {size: median(r["peak_mb"] for r in runs) for size, runs in memory.items()}
    small, large = sizes
    grows = peaks[large] - peaks[small]
    met_memory = grows <= MEMORY_MARGIN_MB
    rows.append(
        [
            "prediction, streaming memory",
            f"{small:,} vs {large:,} real reviews through the same bundle",
            f"{peaks[small]:.0f} MB peak RSS ({small:,} texts)",
            f"{peaks[large]:.0f} MB peak RSS ({large:,} texts)",
            f"{grows:+.0f} MB",
            f"<= +{MEMORY_MARGIN_MB} MB",
            "yes" if met_memory else "**no**",
            "texts are read, embedded, imaged and classified 1,024 at a time",
        ]
    )
    return {
        "rows": rows,
        "met": {"prediction throughput": share >= 0.8, "prediction memory": met_memory},
        "raw": {
            "bundle": str(bundle),
            "runs": res,
            "memory": memory,
            "embeddings": str(IMDB_EMBEDDINGS),
        },
    }


def _meta(bundle: Path) -> dict:
    import json

    return json.loads((bundle / "bundle.json").read_text())


def _encoder(bundle: Path) -> str:
    return _meta(bundle)["encoder"]["model"]


def _layers(bundle: Path) -> list[int]:
    return _meta(bundle)["encoder"]["layers"]
