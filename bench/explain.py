"""Explaining one 512-token review (`textvision explain`'s integrated gradients with its default
steps and reference texts) through the real run's bundles: the ResNet-18 image model and the
logistic baseline. No reference implementation: the row gives the time and memory a user waits
for per review."""

from __future__ import annotations

from bench.common import REPO, median, worker
from bench.predict import ensure_bundle
from textvision.explain.attribution import IG_STEPS

LOGREG = REPO / "results" / "imdb" / "baselines" / "logreg" / "bundle"


def run(args) -> dict:
    bundles = {"image model": ensure_bundle(args)}
    if (LOGREG / "bundle.json").exists():
        bundles["logistic baseline"] = LOGREG
    rows, raw = [], {}
    for what, bundle in bundles.items():
        runs = [
            worker("explain_ours", args.threads, run=r, imdb=str(args.imdb), bundle=str(bundle))
            for r in range(args.runs)
        ]
        raw[what] = runs
        shown = bundle.relative_to(REPO) if bundle.is_relative_to(REPO) else bundle
        rows.append(
            [
                f"explain one review, {what}",
                f"a real IMDB review of {runs[0]['tokens']} tokens (truncated at 512), bundle "
                f"`{shown}`, {args.threads} threads",
                "-",
                f"{median(r['seconds'] for r in runs):.1f} s, peak RSS "
                f"{median(r['peak_mb'] for r in runs):.0f} MB "
                f"(+{median(r['extra_mb'] for r in runs):.0f} MB above start)",
                "-",
                "none (what a user waits for)",
                "-",
                f"integrated gradients, {runs[0]['baselines']} reference texts as baselines, "
                f"{runs[0]['steps']} steps each (from {IG_STEPS}); completeness "
                f"error {runs[0]['completeness_error']:.2%}; bundle loading untimed",
            ]
        )
    return {"rows": rows, "met": {}, "raw": raw}
