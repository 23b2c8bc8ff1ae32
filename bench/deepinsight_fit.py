"""DeepInsight fit: pyDeepInsight with scikit-learn's t-SNE against textvision's
DeepInsightTransformer, same t-SNE settings, on real MiniLM embeddings of IMDB reviews."""

from __future__ import annotations

from bench.common import ensure_embeddings, median, ratio, repeat

QUALITY_K = (5, 30)


def run(args) -> dict:
    embeddings = ensure_embeddings(
        args.embeddings, args.fit_rows, args.out, args.imdb, args.threads
    )
    settings = {
        "embeddings": str(embeddings),
        "rows": args.fit_rows,
        "pixels": 50,
        "perplexity": 30.0,
        "max_iter": args.tsne_iter,
        "quality": list(QUALITY_K),
    }
    res = repeat(
        args.runs,
        args.threads,
        [
            ("ref", "fit_ref", settings),
            (
                "ours",
                "fit_ours",
                {**settings, "backend": args.backend, "save_mapping": str(args.out / "mapping.h5")},
            ),
        ],
    )
    t_ref = median(r["seconds"] for r in res["ref"])
    t_ours = median(r["seconds"] for r in res["ours"])
    speedup = t_ref / t_ours
    met = speedup >= 2
    trust = {
        side: {k: median(r["trust"][str(k)] for r in res[side] if "trust" in r) for k in QUALITY_K}
        for side in ("ref", "ours")
    }
    pixels = {side: median(r["pixels_used"] for r in res[side]) for side in ("ref", "ours")}
    quality = "; ".join(
        f"trustworthiness k={k}: ref {trust['ref'][k]:.3f}, ours {trust['ours'][k]:.3f}"
        for k in QUALITY_K
    )
    rows = [
        [
            "DeepInsight fit",
            f"MiniLM [CLS] of {args.fit_rows:,} IMDB reviews (6 layers x 384), the same "
            "log-scaled matrix on both sides (scaling untimed), its 2,304 features as points; "
            f"t-SNE cosine, perplexity 30, PCA init, learning rate auto, "
            f"{args.tsne_iter:,} iterations, Barnes-Hut angle 0.5; 50x50 pixels; ours "
            f"backend={args.backend}",
            f"{t_ref:.1f} s",
            f"{t_ours:.1f} s",
            ratio(speedup),
            ">= 2x",
            "yes" if met else "**no**",
            f"{quality}; pixels used ref {pixels['ref']:.0f}, ours {pixels['ours']:.0f} of 2,500",
        ]
    ]
    return {
        "rows": rows,
        "raw": {**res, "trust": trust},
        "met": {"fit": met},
        "mapping": args.out / "mapping.h5",
        "embeddings": embeddings,
    }
