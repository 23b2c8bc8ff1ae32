"""The baseline every reader asks about: logistic regression on the raw flattened embeddings."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from textvision.bundle.logistic import LogisticClassifier
from textvision.bundle.store import ENCODER_KEYS, write_bundle
from textvision.config.settings import BaselineSettings
from textvision.core.io import attrs_dict, decode, open_h5, write_json
from textvision.embed.store import read_embeddings
from textvision.train.metrics import classification_metrics
from textvision.train.predictions import prediction_table, write_predictions

log = logging.getLogger(__name__)


def train_logreg(embeddings: str | Path, out: str | Path, settings: BaselineSettings) -> dict:
    """Fit on the training split, score the validation (and test) split, write metrics.json and,
    beside it, `bundle/` and `predictions.parquet`.
    lbfgs is deterministic: one fit, recorded as seed 0."""
    C = settings.C
    with open_h5(embeddings, "id", "label", "split") as fh:
        ids, labels, split = decode(fh["id"][:]), fh["label"][:], decode(fh["split"][:])
        attrs = attrs_dict(fh)
    X, _ = read_embeddings(embeddings)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=settings.max_iter))
    train = split == "train"
    tic = time.perf_counter()
    model.fit(X[train], labels[train])
    seconds = time.perf_counter() - tic
    proba = {s: model.predict_proba(X[split == s]) for s in ("val", "test") if (split == s).any()}
    scores = {s: classification_metrics(labels[split == s], p) for s, p in proba.items()}
    metrics = {
        "backbone": "logreg",
        "weights": "n/a",
        "feature_maps": None,
        "C": C,
        "n_features": int(X.shape[1]),
        "val_accuracy_last": scores["val"]["accuracy"],
        "val_accuracy_best": scores["val"]["accuracy"],
        "val_last": scores["val"],
        "val_best": scores["val"],
        "test_best": scores.get("test"),
        "train_seconds": seconds,
        "images_per_second": None,
        "n_train": int(train.sum()),
        "n_val": int((split == "val").sum()),
        "n_test": int((split == "test").sum()),
        "label_names": attrs["label_names"],
        "synthetic": attrs.get("synthetic", False),
        "seed": 0,
        "history": [],
    }
    table = prediction_table(ids, split, labels, proba, attrs["label_names"])
    write_model(Path(out).parent, model, attrs, table)
    write_json(out, metrics)
    return metrics


def write_model(outdir: Path, model, attrs: dict, predictions) -> None:
    """`predictions.parquet` (validation and test predictions) and `bundle/`, the fitted
    pipeline as a portable model (`textvision predict`); no bundle for
    embeddings that do not name their encoder (not written by `textvision embed`)."""
    write_predictions(outdir / "predictions.parquet", predictions)
    missing = [k for k in ENCODER_KEYS if k not in attrs]
    if missing:
        log.warning("no model bundle: the embeddings lack the encoder's %s", missing)
        return
    write_bundle(outdir / "bundle", *LogisticClassifier.pack(model, attrs))
