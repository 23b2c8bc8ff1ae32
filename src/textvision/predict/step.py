"""`textvision predict`: classify new texts with a model bundle (`bundle/` of a training job or
of the baseline), streaming in chunks so that memory does not grow with the number of texts."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from textvision.bundle.model import load_bundle
from textvision.bundle.store import read_meta
from textvision.config.settings import PredictSettings
from textvision.core.device import resolve_device
from textvision.core.errors import InputError
from textvision.core.io import atomic_path
from textvision.data.tables import check_texts, clean_texts, iter_table, rows

CHUNK = 1024  # texts read, embedded, imaged and classified at a time


def iter_texts(
    source: str | Path,
    text_column: str,
    id_column: str | None,
    clean_html: bool,
    chunk: int = CHUNK,
) -> Iterator[pd.DataFrame]:
    """Columns id, text of a CSV/TSV/Parquet/JSONL file (read like `data.source`), `chunk` rows
    at a time, checked like `prepare_data` checks its texts: one-line errors naming the file,
    rows (counted from the file's first data row) and column."""
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{source}: file not found")
    offset = 0
    for frame in iter_table(path, chunk):
        for role, column in (("text", text_column), ("id", id_column)):
            if column is not None and column not in frame.columns:
                raise InputError(
                    f"{source}: missing {role} column {column!r} (--{role}-column); found "
                    f"columns {list(frame.columns)}"
                )
        texts = clean_texts(frame[text_column], clean_html)
        check_texts(texts, source, text_column, clean_html, offset)
        bad = texts.map(_not_utf8).to_numpy()
        if bad.any():
            raise InputError(
                f"{source}: text column {text_column!r} holds text that is not valid UTF-8 at "
                f"rows {rows(bad, offset)}; expected UTF-8 text"
            )
        ids = frame[id_column].astype(str) if id_column else range(offset, offset + len(frame))
        yield pd.DataFrame({"id": np.asarray(ids), "text": texts.to_numpy()})
        offset += len(frame)
    if offset == 0:
        raise InputError(f"{source}: no data rows (only a header?); expected texts")


def read_texts(
    source: str | Path, text_column: str, id_column: str | None, clean_html: bool
) -> pd.DataFrame:
    """All of `iter_texts` in one frame."""
    chunks = iter_texts(source, text_column, id_column, clean_html)
    return pd.concat(list(chunks), ignore_index=True)


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a lenient decoder
        return True
    return False


def predict_texts(
    model: str | Path,
    source: str | Path,
    out: str | Path,
    settings: PredictSettings | None = None,
) -> Path:
    """Write `out` (CSV): id, predicted class name, prob_<class> per class, one row per text of
    `source`, from the bundle folder `model`. Nothing is written when a check fails.

    Args:
        model: a bundle folder (`train/<backbone>/seed<k>/bundle`, `baselines/logreg/bundle`).
        source: the texts, a CSV/TSV/Parquet/JSONL file.
        out: the CSV to write.
        settings: `PredictSettings` (text and id columns of `source`, id None or "": row
            numbers; texts per forward pass; device); None: the schema's defaults.
    """
    settings = settings or PredictSettings.make()
    if Path(out).suffix.lower() != ".csv":
        raise InputError(f"{out}: predictions are written as CSV; expected a path ending in .csv")
    id_column = settings.id_column or None
    meta = read_meta(model)  # version and checksum first: cheap
    clean_html = bool(meta["encoder"]["clean_html"])
    chunks = iter_texts(source, settings.text_column, id_column, clean_html)
    first = next(chunks)  # the input's checks before the bundle loads
    if first.empty:
        raise InputError(f"{source}: no rows, only a header; expected texts to classify")
    device = str(resolve_device(settings.device))
    bundle = load_bundle(model, device=device, batch_size=settings.batch_size)
    names = bundle.class_names
    header = ["id", "predicted", *(f"prob_{name}" for name in names)]
    with (
        atomic_path(out) as tmp,
        open(tmp, "w", newline="", encoding="utf-8") as fh,
        tqdm(unit="text", desc="predict", mininterval=2) as bar,
    ):
        writer = csv.writer(fh)
        writer.writerow(header)
        for chunk in itertools.chain([first], chunks):
            proba = bundle.predict_proba(chunk["text"].tolist(), progress=bar)
            predicted = np.asarray(names, dtype=object)[proba.argmax(1)]
            for row_id, name, row in zip(chunk["id"], predicted, proba, strict=True):
                writer.writerow([row_id, name, *(f"{p:.9g}" for p in row)])
    return Path(out)
