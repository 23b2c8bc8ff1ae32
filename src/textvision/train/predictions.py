"""Per-example predictions (`predictions.parquet`) of a training job or the baseline: what the
paired comparisons of the report are computed from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from textvision.core.errors import InputError
from textvision.core.io import atomic_path

SCORED_SPLITS = ("val", "test")


def prediction_table(
    ids: np.ndarray,
    split: np.ndarray,
    labels: np.ndarray,
    proba: dict[str, np.ndarray],
    class_names: list[str],
) -> pd.DataFrame:
    """One row per validation and test example (in the input's row order): id, split, true
    label, predicted label (class names) and one float32 column `prob_<class>` per class.
    `proba` maps each scored split to its `[n, K]` probabilities, rows in the input's order."""
    names = np.asarray(class_names, dtype=object)
    frames = []
    for s in SCORED_SPLITS:
        rows = np.flatnonzero(split == s)
        if s not in proba or not len(rows):
            continue
        p = np.asarray(proba[s], dtype=np.float32)
        frame = pd.DataFrame(
            {
                "id": np.asarray(ids)[rows].astype(str),
                "split": s,
                "label": names[labels[rows]],
                "predicted": names[p.argmax(1)],
            }
        )
        for k, name in enumerate(class_names):
            frame[f"prob_{name}"] = p[:, k]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def write_predictions(path: str | Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def read_predictions(path: str | Path) -> pd.DataFrame:
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable predictions file ({err})") from err
    missing = {"id", "split", "label", "predicted"} - set(table.columns)
    if missing:
        raise InputError(f"{path}: missing columns {sorted(missing)} of a predictions file")
    return table


def class_probabilities(table: pd.DataFrame, class_names: list[str]) -> np.ndarray:
    """The `[n, K]` probabilities of a prediction table, columns in class order."""
    return table[[f"prob_{name}" for name in class_names]].to_numpy()
