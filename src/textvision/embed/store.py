"""Reading `embeddings.h5`, the merged `[CLS]` tensor `cls` `[N, L, H]` with id/label/split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from textvision.core.errors import InputError
from textvision.core.io import attrs_dict, check_finite, decode, open_h5


def read_embeddings(path: str | Path, rows: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """The `[N, L, H]` `cls` tensor (optionally a boolean row selection) flattened to `[n, L*H]`."""
    with open_h5(path, "cls", "split") as fh:
        cls = fh["cls"]
        if cls.ndim != 3:
            raise InputError(
                f"{path}: dataset 'cls' has shape {cls.shape}; expected [N, layers, hidden]"
            )
        index = np.flatnonzero(rows) if rows is not None else np.arange(len(cls))
        X = cls[index] if rows is not None else cls[:]
        attrs = attrs_dict(fh)
    check_finite(X, path, "cls", row_index=index)
    return X.reshape(len(X), -1), attrs


def n_features(path: str | Path) -> int:
    """Features per row (`layers x hidden`) of `embeddings.h5`, without reading the rows."""
    with open_h5(path, "cls", "split") as fh:
        shape = fh["cls"].shape
    if len(shape) != 3:
        raise InputError(f"{path}: dataset 'cls' has shape {shape}; expected [N, layers, hidden]")
    return shape[1] * shape[2]


def read_splits(path: str | Path) -> np.ndarray:
    with open_h5(path, "cls", "split") as fh:
        return decode(fh["split"][:])
