"""Training throughput per backbone: the original code's loop (backbone in train mode with
autograd, recomputed every step) against textvision.train.step's machinery (frozen, no_grad, eval,
feature cache), one whole epoch on 150x150 inputs (50x50 images upsampled x3); in float32 (the
default on a CPU) and, where the CPU has native bfloat16, with `training.precision: bfloat16`."""

from __future__ import annotations

from bench.common import geomean, median, ratio, repeat
from textvision.core.backbones import paper_backbones
from textvision.core.device import native_bf16

BACKBONES = tuple(paper_backbones())  # from the registry
# precision -> (each backbone's least ratio, the geometric mean's least ratio)
TARGETS = {"float32": (1.1, 1.5), "bfloat16": (1.5, 2.5)}


def run(args) -> dict:
    precisions = ["float32", *(["bfloat16"] if native_bf16() else [])]
    common = {"n_images": args.train_images, "batch_size": 32, "pixels": 50, "upsample": 3}
    raw, seconds = {}, {p: {} for p in ["ref", *precisions]}
    for backbone in args.backbones:
        jobs = [("ref", "train_ref", {**common, "backbone": backbone})] + [
            (p, "train_ours", {**common, "backbone": backbone, "precision": p}) for p in precisions
        ]
        raw[backbone] = repeat(args.runs, args.threads, jobs)
        for name, runs in raw[backbone].items():
            seconds[name][backbone] = median(r["seconds"] for r in runs)
    rows, met = [], {}
    for precision in precisions:
        speedups = {b: seconds["ref"][b] / seconds[precision][b] for b in args.backbones}
        part, met[f"training {precision}"] = _rows(args, precision, speedups, seconds)
        rows += part
        raw[f"speedups_{precision}"] = speedups
    if "bfloat16" not in precisions:
        rows.append(["training, bfloat16", *["-"] * 6, "not run: no native bfloat16 on this CPU"])
    return {"rows": rows, "raw": raw, "met": met}


def _rows(args, precision: str, speedups: dict, seconds: dict) -> tuple[list, bool]:
    each, mean_target = TARGETS[precision]
    label = "" if precision == "float32" else ", bfloat16"
    n = args.train_images
    rows = [
        [
            f"training{label}, {backbone}",
            f"{n} images/epoch, batch 32, 150x150x3 inputs, weights none",
            f"{n / seconds['ref'][backbone]:.1f} images/s",
            f"{n / seconds[precision][backbone]:.1f} images/s",
            ratio(speedup),
            f">= {each}x each",
            "yes" if speedup >= each else "**no**",
            "ours includes computing the feature cache (the whole epoch's backbone maps)"
            + ("" if precision == "float32" else "; reference in float32, as the original ran"),
        ]
        for backbone, speedup in speedups.items()
    ]
    mean = geomean(list(speedups.values()))
    paper_five = set(args.backbones) == set(BACKBONES)
    met = mean >= mean_target and min(speedups.values()) >= each and paper_five
    rows.append(
        [
            f"training{label}, geometric mean",
            f"the {len(speedups)} backbones above"
            + ("" if paper_five else " (not the paper's five: target not assessed)"),
            "-",
            "-",
            ratio(mean),
            f">= {mean_target}x, none below {each}x",
            "yes" if met else "**no**",
            f"lowest {min(speedups, key=speedups.get)} {ratio(min(speedups.values()))}",
        ]
    )
    return rows, met
