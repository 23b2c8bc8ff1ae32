"""Bundle kind `logreg`: the baseline's StandardScaler and LogisticRegression, packed into a
bundle's tensors and rebuilt from them (numpy and scikit-learn only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from textvision.bundle.store import check_shape, encoder_meta, require_tensors


@dataclass
class LogisticClassifier:
    """Kind `logreg`: the baseline's StandardScaler and LogisticRegression on the flattened
    `[CLS]` vectors."""

    KIND: ClassVar[str] = "logreg"
    scaler: StandardScaler
    logreg: LogisticRegression
    _TENSORS: ClassVar[tuple[str, ...]] = (
        "scaler.mean",
        "scaler.scale",
        "logreg.coef",
        "logreg.intercept",
        "logreg.classes",
    )

    @staticmethod
    def pack(pipeline, attrs: dict) -> tuple[dict, dict]:
        """(meta, tensors) of the baseline's StandardScaler + LogisticRegression pipeline."""
        scaler, logreg = pipeline[0], pipeline[-1]
        meta = {
            "kind": LogisticClassifier.KIND,
            "class_names": list(attrs["label_names"]),
            "encoder": encoder_meta(attrs),
            "logreg": {"C": float(logreg.C), "n_features": int(scaler.n_features_in_)},
        }
        arrays = (scaler.mean_, scaler.scale_, logreg.coef_, logreg.intercept_, logreg.classes_)
        return meta, dict(zip(LogisticClassifier._TENSORS, arrays, strict=True))

    @classmethod
    def load(cls, folder: Path, meta: dict, tensors: dict, device, batch_size: int):
        """The classifier of a bundle's tensors, each checked against `meta`."""
        names = cls._TENSORS
        require_tensors(folder, tensors, names)
        n, k = meta["logreg"]["n_features"], len(meta["class_names"])
        rows = 1 if k == 2 else k
        for name, shape in zip(names, ((n,), (n,), (rows, n), (rows,), (k,)), strict=True):
            check_shape(folder, name, tensors[name], shape)
        scaler = StandardScaler()
        scaler.mean_, scaler.scale_ = tensors["scaler.mean"], tensors["scaler.scale"]
        scaler.var_, scaler.n_features_in_ = scaler.scale_**2, n
        logreg = LogisticRegression(C=meta["logreg"]["C"])
        logreg.coef_, logreg.intercept_ = tensors["logreg.coef"], tensors["logreg.intercept"]
        logreg.classes_, logreg.n_features_in_ = tensors["logreg.classes"], n
        return cls(scaler, logreg)

    @property
    def n_features(self) -> int:
        return int(self.scaler.n_features_in_)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if not len(X):  # scikit-learn refuses no rows
            return np.zeros((0, len(self.logreg.classes_)), np.float64)
        return self.logreg.predict_proba(self.scaler.transform(X))
