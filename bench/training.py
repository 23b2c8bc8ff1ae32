"""Training throughput per backbone: the original code's loop (backbone in train mode with
autograd, recomputed every step) against textvision.train's machinery (frozen, no_grad, eval,
feature cache), one whole epoch on 150x150 inputs (50x50 images upsampled x3)."""

from __future__ import annotations

from bench.common import geomean, median, ratio, repeat
from textvision.backbones import paper_backbones

BACKBONES = tuple(paper_backbones())  # from the registry


def run(args) -> dict:
    rows, speedups, raw = [], {}, {}
    common = {
        "n_images": args.train_images,
        "batch_size": 32,
        "pixels": 50,
        "upsample": 3,
    }
    for backbone in args.backbones:
        res = repeat(
            args.runs,
            args.threads,
            [
                ("ref", "train_ref", {**common, "backbone": backbone}),
                ("ours", "train_ours", {**common, "backbone": backbone}),
            ],
        )
        raw[backbone] = res
        t_ref = median(r["seconds"] for r in res["ref"])
        t_ours = median(r["seconds"] for r in res["ours"])
        speedups[backbone] = t_ref / t_ours
        rows.append(
            [
                f"training, {backbone}",
                f"{args.train_images} images/epoch, batch 32, 150x150x3 inputs, weights none",
                f"{args.train_images / t_ref:.1f} images/s",
                f"{args.train_images / t_ours:.1f} images/s",
                ratio(speedups[backbone]),
                ">= 1.1x each",
                "yes" if speedups[backbone] >= 1.1 else "**no**",
                "ours includes computing the feature cache (the whole epoch's backbone maps)",
            ]
        )
    mean = geomean(list(speedups.values()))
    paper_five = set(args.backbones) == set(BACKBONES)
    met = mean >= 1.5 and min(speedups.values()) >= 1.1 and paper_five
    rows.append(
        [
            "training, geometric mean",
            f"the {len(speedups)} backbones above"
            + ("" if paper_five else " (not the paper's five: target not assessed)"),
            "-",
            "-",
            ratio(mean),
            ">= 1.5x, none below 1.1x",
            "yes" if met else "**no**",
            f"lowest {min(speedups, key=speedups.get)} {ratio(min(speedups.values()))}",
        ]
    )
    return {"rows": rows, "raw": {**raw, "speedups": speedups}, "met": {"training": met}}
