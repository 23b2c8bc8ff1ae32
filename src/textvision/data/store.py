"""Reading and writing `dataset.parquet`: columns id, text, label, split, and the metadata
(label names, source, split settings) in the Parquet schema."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from textvision.core.errors import InputError
from textvision.core.io import atomic_path


def write_dataset(data: pd.DataFrame, meta: dict, out: str | Path) -> None:
    table = pa.Table.from_pandas(data, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"textvision": json.dumps(meta).encode()}
    )
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)


def read_dataset(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Return the dataset frame and its metadata (label names, source, split settings)."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError as err:
        raise InputError(f"{path}: file not found") from err
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"{path}: not a readable Parquet file ({err})") from err
    meta = json.loads((table.schema.metadata or {}).get(b"textvision", b"{}"))
    frame = table.to_pandas()
    missing = {"id", "text", "label", "split"} - set(frame.columns)
    if missing or "label_names" not in meta:
        raise InputError(
            f"{path}: not a textvision dataset (missing columns {sorted(missing)} or label names)"
        )
    return frame, meta
