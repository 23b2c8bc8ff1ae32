"""Classification metrics shared by the trained models and the baseline."""

from __future__ import annotations

import numpy as np
from sklearn import metrics


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict:
    """Accuracy, balanced accuracy, macro F1, ROC-AUC (one-vs-rest for K > 2), confusion."""
    n_classes = proba.shape[1]
    y_pred = proba.argmax(axis=1)
    labels = np.arange(n_classes)
    out = {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(metrics.balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            metrics.f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)
        ),
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "n": int(len(y_true)),
    }
    present = np.unique(y_true)
    if len(present) < 2:
        out["roc_auc"] = None
    elif n_classes == 2:
        out["roc_auc"] = float(metrics.roc_auc_score(y_true, proba[:, 1]))
    else:
        out["roc_auc"] = float(
            metrics.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)
        )
    return out
