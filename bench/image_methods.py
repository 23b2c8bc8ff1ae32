"""IGTD and REFINED fits: TINTOlib's against textvision's, on the same min-max scaled MiniLM
matrix of IMDB reviews, each layout scored by the method's own error (bench/references.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.common import (
    REPO,
    ensure_embeddings,
    fmt,
    interpreter_env,
    median,
    ratio,
    repeat,
)

FULL = 2304  # MiniLM's six 384-wide layers
SPEEDUP = 5  # the target: at least this much faster, at an error no worse


def run(args) -> dict:
    embeddings = ensure_embeddings(
        args.embeddings, args.fit_rows, args.out, args.imdb, args.threads
    )
    common = {"embeddings": str(embeddings), "rows": args.fit_rows, "all_features": FULL,
              "tintolib_python": str(args.tintolib_python)}  # fmt: skip
    settings = {
        "IGTD": {**common, "features": FULL, "pixels": 48, "max_step": args.igtd_steps,
                 "val_step": 50, "min_gain": 1e-5},
        "REFINED": {**common, "features": args.refined_features, "hc_iterations": 5},
    }  # fmt: skip
    rows, met, raw = [], {}, {}
    for name, params in settings.items():
        task = name.lower()
        reason = missing(args.tintolib_python, task)
        if reason:
            rows.append([f"{name} fit", "-", "-", "-", "-", "-", "-", f"not run: {reason}"])
            continue
        res = repeat(args.runs, args.threads, [("ref", f"{task}_ref", params),
                                               ("ours", f"{task}_ours", params)])  # fmt: skip
        t = {side: median(r["seconds"] for r in res[side]) for side in ("ref", "ours")}
        error = {side: median(r["error"] for r in res[side]) for side in ("ref", "ours")}
        speedup = t["ref"] / t["ours"]
        met[f"{name} fit"] = speedup >= SPEEDUP and error["ours"] <= error["ref"]
        inputs = _igtd_inputs(args) if name == "IGTD" else _refined_inputs(args, res["ref"][0])
        rows.append(
            [
                f"{name} fit",
                inputs,
                f"{t['ref']:.1f} s",
                f"{t['ours']:.1f} s",
                ratio(speedup),
                f">= {SPEEDUP}x, error no worse",
                "yes" if met[f"{name} fit"] else "**no**",
                f"{name}'s error, median of the runs: TINTOlib {fmt(error['ref'], 4)} (seeds "
                f"1-{args.runs}), ours {fmt(error['ours'], 4)}",
            ]
        )
        raw[task] = {"seconds": t, "error": error, "runs": res}
    return {"rows": rows, "met": met, "raw": raw}


def missing(python: Path, method: str) -> str | None:
    """Why TINTOlib's `method` cannot run in the interpreter `python`, or None."""
    code = f"from bench.references import missing; print(missing({method!r}) or '')"
    proc = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, cwd=REPO,
        env=interpreter_env(python),
    )  # fmt: skip
    if proc.returncode:
        return f"{python}: {proc.stderr.strip().splitlines()[-1]}"
    return proc.stdout.strip() or None


def _igtd_inputs(args) -> str:
    return (
        f"MiniLM [CLS] of {args.fit_rows:,} IMDB reviews, all 2,304 features, min-max scaled "
        "(untimed); 48x48 pixels (a full grid: TINTOlib's IGTD swaps features only among the "
        "first n pixels); Euclidean feature and pixel distances, abs error, "
        f"max_step {args.igtd_steps:,}, val_step 50, min_gain 1e-5 on both sides; TINTOlib "
        "1.3.1"
    )


def _refined_inputs(args, first_ref_run: dict) -> str:
    side = int(-(-(args.refined_features**0.5) // 1))
    evaluation = first_ref_run["evaluation_seconds"]
    # its 5 iterations evaluate, for every pixel, its error before and after each of 9 swaps,
    # on one worker rank
    hours = 5 * 10 * FULL * evaluation / 3600
    return (
        f"the same matrix, {args.refined_features} of its features (evenly spaced), "
        f"{side}x{side} pixels, 5 hill-climbing iterations on both sides; TINTOlib 1.3.1 "
        "under Open MPI on 2 ranks (one coordinates). Not on all 2,304 features: TINTOlib "
        f"recomputes its error over all feature pairs for every candidate swap, {evaluation:.2f}"
        f" s per evaluation there, about {hours:.0f} h for its 5 iterations"
    )
