"""The report's "Explained predictions" section, read from `textvision explain` folders: per
model a link to its pages, the explained texts (label, prediction, the words with the most
attribution) and, for image models, the share of attribution mass per BERT layer."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from textvision.explain.figures import FEATURES_CSV, LAYER_FIGURE, layer_shares

INDEX_CSV = "index.csv"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _baseline(rows: pd.DataFrame) -> str:
    """What the integrals of an index start from: `[PAD]`, or the mean over training texts."""
    counts = sorted({int(n) for n in rows.get("baselines", [0]) if str(n) != ""})
    if counts in ([], [0]):
        return "the [PAD] embedding"
    return f"the mean over {'/'.join(map(str, counts))} training texts (expected gradients)"


def _model_markdown(index: Path, outdir: Path) -> str:
    folder = index.parent
    link = Path(os.path.relpath(folder, outdir)).as_posix()
    rows = pd.read_csv(folder / INDEX_CSV, dtype={"id": str}, keep_default_na=False)
    lines = [
        f"\n### {_cell(folder.name)}\n",
        f"Pages: [{link}/index.html]({link}/index.html). Baseline: {_baseline(rows)}.\n",
        "| text | label | predicted | probability | completeness error | words with the most "
        "attribution |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows.to_dict("records"):
        mark = "" if r["label"] in ("", r["predicted"]) else " (wrong)"
        lines.append(
            f"| [{_cell(r['id'])}]({link}/{r['page']}.html) | {_cell(r['label'])} | "
            f"{_cell(r['predicted'])}{mark} | {float(r['probability']):.3f} | "
            f"{float(r['error']):.1%} | {_cell(r['top_words'])} |"
        )
    if (folder / FEATURES_CSV).exists():
        shares = layer_shares(pd.read_csv(folder / FEATURES_CSV))
        lines += [
            "\nShare of attribution mass per BERT layer (mean |gradient x input| over the "
            "validation rows of each class):\n",
            "| layer | " + " | ".join(map(_cell, shares.columns)) + " |",
            "|---" * (len(shares.columns) + 1) + "|",
            *(
                f"| {layer} | " + " | ".join(f"{v:.1%}" for v in row) + " |"
                for layer, row in zip(shares.index, shares.to_numpy(), strict=True)
            ),
            f"\n![attribution per BERT layer]({link}/{LAYER_FIGURE})",
        ]
    return "\n".join(lines) + "\n"


def explained_markdown(index_files: list[str | Path], outdir: str | Path) -> str:
    """The section for the `index.html` files of explain folders (links relative to `outdir`,
    the report's folder)."""
    intro = (
        "\n## Explained predictions\n\nValidation texts of each model, sampled over both "
        "classes with right and wrong predictions (`explain.n_texts`). Words: integrated "
        "gradients of the predicted class's score (`explain.references`: from the mean over "
        "training texts as baselines, or from [PAD]); completeness error: how far, relative, "
        "their sum is from the score difference it should equal. Each page shades them.\n"
    )
    return intro + "".join(_model_markdown(Path(f), Path(outdir)) for f in index_files)
