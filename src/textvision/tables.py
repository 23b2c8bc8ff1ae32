"""Reading tables of texts (CSV, TSV, Parquet, JSONL) and cleaning their texts: shared by
`prepare_data` (labelled texts) and `predict` (new texts), with pandas and pyarrow only."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from textvision.errors import InputError

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_READERS = {
    ".csv": lambda buf: pd.read_csv(buf),
    ".tsv": lambda buf: pd.read_csv(buf, sep="\t"),
    ".jsonl": lambda buf: pd.read_json(buf, lines=True),
    ".json": lambda buf: pd.read_json(buf, lines=True),
}


def load_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (expected a header and labelled rows)")
    if suffix == ".parquet":
        try:
            return pd.read_parquet(path)
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"{path}: not a readable Parquet file ({one_line(err)})") from err
    if suffix not in _READERS:
        raise InputError(
            f"{path}: unknown file type {suffix!r}; expected .csv, .tsv, .parquet, .jsonl, "
            "an aclImdb folder or aclImdb_v1.tar.gz"
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InputError(
            f"{path}: line {line}, byte {err.start}: invalid UTF-8 ({err.reason}); "
            "expected UTF-8 text"
        ) from err
    try:
        return _READERS[suffix](io.StringIO(text))
    except (pd.errors.EmptyDataError, ValueError) as err:
        raise InputError(f"{path}: cannot parse as {suffix[1:].upper()} ({one_line(err)})") from err


def rows(mask) -> list[int]:
    """The first few row numbers (0-based data rows) where `mask` holds."""
    return np.flatnonzero(np.asarray(mask, dtype=bool))[:5].tolist()


def one_line(err: BaseException) -> str:
    """An exception's text on one line (parsers' messages may hold newlines)."""
    return " ".join(str(err).split())


def clean_text(text):
    """`<br />` (any spelling) -> a space, runs of whitespace collapsed; non-strings unchanged."""
    return " ".join(_BR.sub(" ", text).split()) if isinstance(text, str) else text


def check_texts(texts: pd.Series, source, column: str, cleaned: bool) -> None:
    """Stop on empty, whitespace-only or non-string texts (after HTML cleaning when `cleaned`),
    naming the column and the first rows."""
    empty = texts.isna().to_numpy() | ~texts.map(lambda t: isinstance(t, str) and t.strip() != "")
    if empty.any():
        after = " after HTML cleaning (<br /> removed)" if cleaned else ""
        raise InputError(
            f"{source}: text column {column!r} has empty, whitespace-only or non-string "
            f"values{after} at rows {rows(empty)}; expected a text in every row"
        )
