"""Reading tables of texts (CSV, TSV, Parquet, JSONL) and cleaning their texts: shared by
`prepare_data` (labelled texts) and `predict` (new texts), with pandas and pyarrow only."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from textvision.core.errors import InputError

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
# Only an empty cell is missing: `NA`, `null`, `None`, `NaN`... are the texts or labels they
# spell (pandas would read them as missing); in JSON lines only `null` is.
_CSV = {"encoding": "utf-8", "keep_default_na": False, "na_values": [""]}
_READERS = {  # (path, rows per chunk or None) -> a frame, or an iterator of frames
    ".csv": lambda path, chunk: pd.read_csv(path, chunksize=chunk, **_CSV),
    ".tsv": lambda path, chunk: pd.read_csv(path, sep="\t", chunksize=chunk, **_CSV),
    ".jsonl": lambda path, chunk: pd.read_json(path, lines=True, encoding="utf-8", chunksize=chunk),
}
_READERS[".json"] = _READERS[".jsonl"]  # JSON lines too


def load_table(path: Path) -> pd.DataFrame:
    """A whole CSV/TSV/Parquet/JSONL file as one frame."""
    return next(iter_table(path))


def iter_table(path: Path, chunk: int | None = None) -> Iterator[pd.DataFrame]:
    """The rows of a CSV/TSV/Parquet/JSONL file, all in one frame (`chunk` None) or `chunk` rows
    at a time (a Parquet file in its own batches of at most `chunk` rows); errors name the file,
    and for text formats the line of the first byte that is not UTF-8."""
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (expected a header and labelled rows)")
    if suffix == ".parquet":
        try:
            if chunk is None:
                yield pd.read_parquet(path)
            else:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk):
                    yield batch.to_pandas()
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"{path}: not a readable Parquet file ({one_line(err)})") from err
        return
    if suffix not in _READERS:
        raise InputError(
            f"{path}: unknown file type {suffix!r}; expected .csv, .tsv, .parquet, .jsonl, "
            "an aclImdb folder or aclImdb_v1.tar.gz"
        )
    _check_utf8(path)
    if suffix in (".json", ".jsonl"):
        _check_json_lines(path)
    try:
        frames = _READERS[suffix](path, chunk)
        yield from [frames] if chunk is None else frames
    except (pd.errors.EmptyDataError, ValueError) as err:
        raise InputError(f"{path}: cannot parse as {suffix[1:].upper()} ({one_line(err)})") from err


def _check_utf8(path: Path) -> None:
    """Stop at the first line that is not UTF-8, read line by line (constant memory)."""
    offset = 0
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(
                    f"{path}: line {number}, byte {offset + err.start}: invalid UTF-8 "
                    f"({err.reason}); expected UTF-8 text"
                ) from err
            offset += len(line)


_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
_JSON_KINDS[type(None)] = "null"


def _check_json_lines(path: Path) -> None:
    """Stop at the first line that is not one JSON object (blank lines aside), naming it; a
    whole JSON array is refused as such (JSON lines hold one object per line)."""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                if number == 1 and line.lstrip().startswith("["):  # an array over lines
                    raise InputError(
                        f"{path}: a JSON array; expected JSON lines (one object per line, e.g. "
                        '{"text": "...", "label": "pos"})'
                    ) from err
                raise InputError(
                    f"{path}: line {number}, column {err.colno}: not valid JSON ({err.msg}); "
                    "expected one JSON object per line"
                ) from err
            if not isinstance(value, dict):
                kind = _JSON_KINDS.get(type(value), "value")
                raise InputError(
                    f"{path}: line {number}: a JSON {kind}; expected JSON lines (one object per "
                    'line, e.g. {"text": "...", "label": "pos"})'
                )


def rows(mask, offset: int = 0) -> list[int]:
    """The first few row numbers (0-based data rows, the mask's first at `offset`) where `mask`
    holds."""
    return (offset + np.flatnonzero(np.asarray(mask, dtype=bool))[:5]).tolist()


def one_line(err: BaseException) -> str:
    """An exception's text on one line (parsers' messages may hold newlines)."""
    return " ".join(str(err).split())


def clean_text(text):
    """`<br />` (any spelling) -> a space, runs of whitespace collapsed; non-strings unchanged."""
    return " ".join(_BR.sub(" ", text).split()) if isinstance(text, str) else text


def clean_texts(texts, clean_html: bool):
    """`texts` as every step reads them: each through `clean_text` where `clean_html` (the
    setting `data.clean_html`, which a bundle records for the texts it is given later), else
    unchanged.

    Args:
        texts: a pandas Series (cleaned: a Series) or any iterable of texts (cleaned: a list).
        clean_html: whether to clean them.
    """
    if not clean_html:
        return texts
    if isinstance(texts, pd.Series):
        return texts.map(clean_text)
    return [clean_text(t) for t in texts]


def check_texts(texts: pd.Series, source, column: str, cleaned: bool, offset: int = 0) -> None:
    """Stop on empty, whitespace-only or non-string texts (after HTML cleaning when `cleaned`),
    naming the column and the first rows (`texts` starting at row `offset`)."""
    empty = texts.isna().to_numpy() | ~texts.map(lambda t: isinstance(t, str) and t.strip() != "")
    if empty.any():
        after = " after HTML cleaning (<br /> removed)" if cleaned else ""
        raise InputError(
            f"{source}: text column {column!r} has empty, whitespace-only or non-string "
            f"values{after} at rows {rows(empty, offset)}; expected a text in every row"
        )
