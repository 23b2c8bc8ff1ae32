"""`textvision explain`: per text a CSV of word attributions and a self-contained HTML page (each
word shaded red or blue by the sign and size of its attribution, the prediction on top), and an
`index.html` linking them (its rows also as `index.csv`, which the report reads); for a run's
validation texts (`--dataset`) with an image model also `features.csv` and the attribution
figures (`explain_figures`). Everything is written into a temporary folder beside the output
folder, which replaces it in one rename at the end."""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from textvision.bundle.image import ImageClassifier
from textvision.bundle.model import load_bundle
from textvision.bundle.store import read_meta
from textvision.config.settings import ExplainSettings
from textvision.core.device import resolve_device
from textvision.core.errors import InputError
from textvision.core.io import atomic_folder
from textvision.data.store import read_dataset
from textvision.explain.attribution import (
    COMPLETENESS_TOLERANCE,
    DifferentiablePath,
    ImageHead,
    TokenAttribution,
    feature_attributions,
    integrated_gradients,
    reference_tokens,
    word_attributions,
)
from textvision.explain.figures import INDEX_CSV, write_feature_outputs
from textvision.predict.step import read_texts

log = logging.getLogger(__name__)

RESERVED = {"index", "features"}  # stems of index.html/index.csv and features.csv
TOP_WORDS = 5  # the words listed per text in index.csv

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0; }
td, th { border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: left; }
.text { line-height: 2; font-size: 1.05rem; border: 1px solid #ddd; padding: 1rem; }
.text span.w { border-radius: 3px; padding: 0.05rem 0.1rem; }
.cut { color: #999; }
.note { color: #555; font-size: 0.9rem; }
.warn { color: #b45309; }
"""


def page_names(ids) -> list[str]:
    """File stems for text ids: characters other than letters, digits, `.`, `_`, `-` become `_`
    (at most 80 kept), no leading dot, the index's and features' names avoided, repeats
    numbered `-2`, `-3`, ..."""
    seen: set[str] = set()
    names = []
    for value in ids:
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", str(value))[:80].lstrip(".") or "text"
        stem = f"{stem}_" if stem.lower() in RESERVED else stem
        name, n = stem, 1
        while name.lower() in seen:
            n += 1
            name = f"{stem}-{n}"
        seen.add(name.lower())
        names.append(name)
    return names


# -- one text ----------------------------------------------------------------------------------
def _shade(value: float, top: float) -> str:
    alpha = min(abs(value) / top, 1.0) if top > 0 else 0.0
    rgb = "220, 38, 38" if value > 0 else "37, 99, 235"
    return f"background: rgba({rgb}, {0.85 * alpha:.3f})"


def shaded_text(text: str, words: pd.DataFrame) -> str:
    """The text as HTML, each word a span shaded by its attribution (title: the value); text the
    encoder did not see (truncated) greyed."""
    top = float(words["attribution"].abs().max()) if len(words) else 0.0
    parts, at = [], 0
    for word in words.itertuples():
        parts.append(html.escape(text[at : word.start]))
        parts.append(
            f'<span class="w" style="{_shade(word.attribution, top)}" '
            f'title="{word.attribution:+.4g}">{html.escape(text[word.start : word.end])}</span>'
        )
        at = word.end
    rest = text[at:]
    if rest.strip():
        parts.append(f'<span class="cut">{html.escape(rest)}</span>')
    return "".join(parts)


def text_page(
    text_id: str, result: TokenAttribution, words: pd.DataFrame, names, label: str | None
) -> str:
    """A self-contained HTML page of one explained text."""
    e = html.escape
    predicted = int(np.argmax(result.proba))
    rows = "".join(
        f"<tr><td>{e(n)}</td><td>{p:.4f}</td></tr>"
        for n, p in zip(names, result.proba, strict=True)
    )
    known = f" &middot; label: <b>{e(label)}</b>" if label is not None else ""
    mean = "mean " if result.baselines else ""
    error = result.completeness_error
    flag = (
        f' <span class="warn">(above {COMPLETENESS_TOLERANCE:.0%}: raise --steps)</span>'
        if error > COMPLETENESS_TOLERANCE
        else ""
    )
    cut = (
        f'<p class="note">Truncated at {len(result.tokens.ids)} tokens: the grey text was not '
        "seen by the model.</p>"
        if result.tokens.truncated
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(str(text_id))}: {e(names[predicted])}</title>
<style>{STYLE}</style></head><body>
<h1>Text {e(str(text_id))}</h1>
<p>Predicted: <b>{e(names[predicted])}</b> ({result.proba[predicted]:.1%}){known}</p>
<table><tr><th>class</th><th>probability</th></tr>{rows}</table>
<p class="note">Shading: integrated gradients ({result.steps} steps) of the score (logit) of
class <b>{e(names[result.target])}</b> with respect to the token embeddings, {_baseline(result)};
pieces of a word summed. Red speaks for
{e(names[result.target])}, blue against it; the strongest word is fully coloured (hover: the
value). The attributions sum to {result.attributions.sum():.4g}; score(text) &minus;
{mean}score(baseline) = {result.score - result.baseline_score:.4g}: relative error {error:.2%}
{flag}.</p>
<div class="text">{shaded_text(result.tokens.text, words)}</div>
{cut}</body></html>
"""


def _baseline(result: TokenAttribution) -> str:
    if result.baselines:
        return (
            f"averaged over {result.baselines} baselines, each a training text's tokens in the "
            "text's [CLS] ... [SEP] frame ([PAD] past its end)"
        )
    return "from a baseline with the [PAD] embedding at every token but [CLS] and [SEP]"


def write_text(
    folder: Path, name: str, text_id, result: TokenAttribution, names, label=None
) -> dict:
    """`folder/<name>.csv` and `folder/<name>.html`; the index row of the text."""
    words = word_attributions(result)
    words.to_csv(folder / f"{name}.csv", index=False, float_format="%.6g")
    (folder / f"{name}.html").write_text(
        text_page(text_id, result, words, names, label), encoding="utf-8"
    )
    log.info(
        "text %s: %d tokens, completeness error %.2f%%",
        text_id,
        len(result.tokens.ids),
        100 * result.completeness_error,
    )
    if result.completeness_error > COMPLETENESS_TOLERANCE:
        log.warning(
            "text %s: attributions off their completeness sum by %.1f%% (tolerance %.0f%%); "
            "more --steps give a closer integral",
            text_id,
            100 * result.completeness_error,
            100 * COMPLETENESS_TOLERANCE,
        )
    predicted = int(np.argmax(result.proba))
    top = words.sort_values("attribution", ascending=False, kind="stable")["word"][:TOP_WORDS]
    return {
        "id": str(text_id),
        "page": name,
        "predicted": names[predicted],
        "probability": float(result.proba[predicted]),
        "label": label,
        "error": result.completeness_error,
        "baselines": result.baselines,
        "top_words": " ".join(top),
    }


def index_page(model: str, rows: list[dict], names, steps: int, extras: list[str]) -> str:
    """`index.html`: one row per explained text, and the feature outputs when there are any."""
    e = html.escape
    labelled = any(r["label"] is not None for r in rows)
    head = "<th>text</th><th>predicted</th><th>probability</th>"
    head += "<th>label</th>" if labelled else ""
    head += "<th>completeness error</th><th>words</th>"
    body = []
    for r in rows:
        cells = f'<td><a href="{e(r["page"])}.html">{e(r["id"])}</a></td>'
        cells += f"<td>{e(r['predicted'])}</td><td>{r['probability']:.3f}</td>"
        if labelled:
            mark = "" if r["label"] == r["predicted"] else " (wrong)"
            cells += f"<td>{e(str(r['label']))}{mark}</td>"
        cells += f'<td>{r["error"]:.2%}</td><td><a href="{e(r["page"])}.csv">csv</a></td>'
        body.append(f"<tr>{cells}</tr>")
    figures = "".join(
        f'<p><img src="{e(x)}" alt="{e(x)}" style="max-width: 100%"></p>'
        for x in extras
        if x.endswith(".png")
    )
    tables = "".join(f'<li><a href="{e(x)}">{e(x)}</a></li>' for x in extras if x.endswith(".csv"))
    features = f"<h2>Pixels, layers and features</h2><ul>{tables}</ul>{figures}" if extras else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Explanations: {e(model)}</title>
<style>{STYLE}</style></head><body>
<h1>Explanations of {e(model)}</h1>
<p class="note">Classes: {e(", ".join(names))}. Words: integrated gradients ({steps} steps, doubled
where the completeness error is above {COMPLETENESS_TOLERANCE:.0%}: each page says how many) of
the predicted class's score; an error still above it means the integral needs more steps.</p>
<table><tr>{head}</tr>{"".join(body)}</table>
{features}</body></html>
"""


# -- the step ----------------------------------------------------------------------------------
def sample_rows(labels: np.ndarray, predicted: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to `n` row indices, balanced over classes (taken in turn), within a class correct and
    wrong predictions in turn while both last; seeded."""
    rng = np.random.default_rng(seed)
    queues = []
    for k in np.unique(labels):
        rows = np.flatnonzero(labels == k)
        right = list(rng.permutation(rows[predicted[rows] == k]))
        wrong = list(rng.permutation(rows[predicted[rows] != k]))
        pairs = [r for pair in zip(right, wrong, strict=False) for r in pair]
        m = min(len(right), len(wrong))
        queues.append(pairs + right[m:] + wrong[m:])
    picked: list[int] = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(int(queue.pop(0)))
    return np.asarray(picked, dtype=np.int64)


def _dataset_rows(dataset, names: list[str], split: str, role: str) -> pd.DataFrame:

    frame, meta = read_dataset(dataset)
    if list(meta["label_names"]) != list(names):
        raise InputError(
            f"{dataset}: classes {meta['label_names']}; the model predicts {names}: not the "
            "dataset it was trained on"
        )
    rows = frame[frame["split"] == split].reset_index(drop=True)
    if len(rows) == 0:
        raise InputError(f"{dataset}: no {split} rows (split == {split!r}) {role}")
    return rows


def reference_texts(dataset, names: list[str], n: int, seed: int) -> list[str]:
    """`n` training texts of a run's `dataset.parquet` (a seeded sample balanced over classes):
    the baselines of the integrated gradients."""
    frame = _dataset_rows(dataset, names, "train", "as reference texts")
    labels = frame["label"].to_numpy(np.int64)
    return frame["text"].iloc[sample_rows(labels, labels, n, seed)].tolist()


def explain_texts(
    model: str | Path,
    out: str | Path,
    settings: ExplainSettings | None = None,
    source: str | Path | None = None,
    dataset: str | Path | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    reference_dataset: str | Path | None = None,
) -> Path:
    """Explain a bundle's predictions of texts as pages in the folder `out` (replaced whole;
    nothing is written when a check fails).

    Args:
        model: a bundle folder (`train/<backbone>/seed<k>/bundle`, `baselines/logreg/bundle`).
        out: the folder to write: `index.html` and `index.csv`, `<id>.csv` and `<id>.html` per
            text, and with `dataset` and an image model `features.csv` and the two figures.
        source: texts to explain, a CSV/TSV/Parquet/JSONL file read like `predict` reads it.
        settings: `ExplainSettings`; None: the schema's defaults. `steps`: integrated-gradients
            steps per text and baseline; `n_texts`: with `dataset`, validation texts explained;
            `references`: training texts used as baselines, the attributions averaged over
            them (0: the `[PAD]` baseline); `seed`: of both samples; `device`.
        dataset: instead of `source`, a run's `dataset.parquet`: `n_texts` of its validation
            texts (a `seed`ed sample balanced over classes, correct and wrong predictions in
            turn), and an image model's feature attributions over all of them.
        text_column, id_column: columns of `source` (id None or "": row numbers).
        reference_dataset: the run's `dataset.parquet` whose training rows the `references`
            come from (a `seed`ed sample balanced over classes; default: `dataset`).
    """
    settings = settings or ExplainSettings.make()
    steps, seed, references = settings.steps, settings.seed, settings.references
    reference_dataset = reference_dataset or dataset
    _check_arguments(source, dataset, steps, references, reference_dataset)
    meta = read_meta(model)
    names = list(meta["class_names"])
    chosen = reference_texts(reference_dataset, names, references, seed) if references else []
    if source is not None:
        frame = read_texts(source, text_column, id_column or None, meta["encoder"]["clean_html"])
    else:
        frame = _dataset_rows(dataset, names, "val", "to explain")
    bundle = load_bundle(model, device=str(resolve_device(settings.device)))
    path = DifferentiablePath(bundle)
    baselines = reference_tokens(path, chosen) if chosen else None
    result, extras = None, []
    if dataset is not None:
        frame, result = _validation_sample(path, frame, settings.n_texts, seed)
    with atomic_folder(out) as tmp:
        if result is not None:
            extras = write_feature_outputs(tmp, result, bundle)
        rows = _write_pages(tmp, path, frame, names, steps, baselines)
        pd.DataFrame(rows).to_csv(tmp / INDEX_CSV, index=False, float_format="%.6g")
        (tmp / "index.html").write_text(
            index_page(_model_label(model, meta), rows, names, steps, extras), encoding="utf-8"
        )
    return Path(out)


def _check_arguments(source, dataset, steps: int, references: int, reference_dataset) -> None:
    """One source of texts, at least one step, and a dataset to draw reference texts from."""
    if (source is None) == (dataset is None):
        raise InputError("explain: give the texts either as --input FILE or as --dataset FILE")
    if steps < 1:
        raise InputError(f"--steps {steps}: expected at least 1")
    if references > 0 and reference_dataset is None:
        raise InputError(
            f"--references {references}: reference texts come from a run's dataset.parquet; "
            "give --reference-dataset FILE (or --references 0 for the [PAD] baseline)"
        )


def _validation_sample(path, frame: pd.DataFrame, n_texts: int, seed: int):
    """The sampled validation rows (`sample_rows` on the model's predictions of every row), and
    an image model's feature attributions over every row (None for the baseline)."""
    from tqdm.auto import tqdm

    labels, texts, result = frame["label"].to_numpy(np.int64), frame["text"].tolist(), None
    with tqdm(total=len(texts), unit="text", desc="validation texts", mininterval=2) as bar:
        if isinstance(path.head, ImageHead):
            result = feature_attributions(path.bundle, texts, labels, progress=bar)
            proba = result.proba
        else:
            proba = path.bundle.predict_proba(texts, progress=bar)
    return frame.iloc[sample_rows(labels, proba.argmax(1), n_texts, seed)], result


def _model_label(model, meta: dict) -> str:
    """What the index calls the model: its backbone (or the baseline) and its folder."""
    what = (
        meta["backbone"]["name"] if meta["kind"] == ImageClassifier.KIND else "logistic regression"
    )
    return f"{what} ({model})"


def _write_pages(
    folder: Path, path, frame: pd.DataFrame, names, steps: int, baselines
) -> list[dict]:
    """One page per row of `frame`, whose texts are cleaned already (`read_texts` and
    `prepare_dataset` apply the bundle's `clean_html`)."""
    rows = []
    labels = frame["label"].tolist() if "label" in frame else [None] * len(frame)
    ids, texts = frame["id"].tolist(), frame["text"].tolist()
    for text_id, name, text, label in zip(ids, page_names(ids), texts, labels, strict=True):
        result = integrated_gradients(path, text, steps=steps, references=baselines)
        label = None if label is None else names[int(label)]
        rows.append(write_text(folder, name, text_id, result, names, label))
    return rows
