"""The report's "Explained predictions" section, read from `textvision explain` folders: per
model a link to its pages, the explained texts (label, prediction, the words with the most
attribution) and, for image models, the share of attribution mass per BERT layer."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from textvision.core.markdown import cell, markdown_table
from textvision.explain.figures import FEATURES_CSV, INDEX_CSV, LAYER_FIGURE, layer_shares


def _baseline(rows: pd.DataFrame) -> str:
    """What the integrals of an index start from: `[PAD]`, or the mean over training texts."""
    counts = sorted({int(n) for n in rows.get("baselines", [0]) if str(n) != ""})
    if counts in ([], [0]):
        return "the [PAD] embedding"
    return f"the mean over {'/'.join(map(str, counts))} training texts (expected gradients)"


TEXT_COLUMNS = [
    "text", "label", "predicted", "probability", "completeness error",
    "words with the most attribution",
]  # fmt: skip


def _text_cells(r: dict, link: str) -> list[str]:
    """A row of an `index.csv` as the cells of TEXT_COLUMNS (the text links to its page)."""
    mark = "" if r["label"] in ("", r["predicted"]) else " (wrong)"
    return [
        f"[{cell(r['id'])}]({link}/{r['page']}.html)",
        cell(r["label"]),
        cell(r["predicted"]) + mark,
        f"{float(r['probability']):.3f}",
        f"{float(r['error']):.1%}",
        cell(r["top_words"]),
    ]


def _model_markdown(index: Path, outdir: Path) -> str:
    folder = index.parent
    link = Path(os.path.relpath(folder, outdir)).as_posix()
    rows = pd.read_csv(folder / INDEX_CSV, dtype={"id": str}, keep_default_na=False)
    lines = [
        f"\n### {cell(folder.name)}\n",
        f"Pages: [{link}/index.html]({link}/index.html). Baseline: {_baseline(rows)}.\n",
        markdown_table(TEXT_COLUMNS, [_text_cells(r, link) for r in rows.to_dict("records")]),
    ]
    if (folder / FEATURES_CSV).exists():
        shares = layer_shares(pd.read_csv(folder / FEATURES_CSV))
        lines += [
            "\nShare of attribution mass per BERT layer (mean |gradient x input| over the "
            "validation rows of each class):\n",
            markdown_table(
                ["layer", *map(cell, shares.columns)],
                [
                    [layer, *(f"{v:.1%}" for v in row)]
                    for layer, row in zip(shares.index, shares.to_numpy(), strict=True)
                ],
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
