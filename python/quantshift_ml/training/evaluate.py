"""Metrics and baselines, all JSON-native so they go straight into metadata and Ansible."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from quantshift_ml import REGIMES


def _as_str(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=object)


def accuracy(y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray) -> float:
    """Share of exact matches; 0.0 for an empty set (callers report counts too)."""
    t, p = _as_str(y_true), _as_str(y_pred)
    return float((t == p).mean()) if len(t) else 0.0


def classification_report(
    y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class precision/recall/support, confusion matrix.

    Classes absent from both truth and prediction are reported with support 0 and
    ``None`` recall/precision instead of crashing or inventing a number.
    """
    t, p = _as_str(y_true), _as_str(y_pred)
    labels = list(REGIMES)
    per_class: dict[str, dict[str, Any]] = {}
    for c in labels:
        tp = int(((t == c) & (p == c)).sum())
        support = int((t == c).sum())
        predicted = int((p == c).sum())
        per_class[c] = {
            "support": support,
            "recall": round(tp / support, 4) if support else None,
            "precision": round(tp / predicted, 4) if predicted else None,
        }
    recalls = [v["recall"] for v in per_class.values() if v["support"]]
    # balanced accuracy = mean recall over the classes present in the truth
    bal = float(np.mean(recalls)) if recalls else 0.0
    cm = [[int(((t == a) & (p == b)).sum()) for b in labels] for a in labels]
    return {
        "n": len(t),
        "accuracy": round(accuracy(t, p), 4),
        "balanced_accuracy": round(bal, 4),
        "per_class": per_class,
        "confusion_matrix": {"labels": labels, "rows_true_cols_pred": cm},
    }


def majority_baseline(y_train: np.ndarray, n: int) -> np.ndarray:
    """Always predict the training set's most frequent regime."""
    values, counts = np.unique(_as_str(y_train), return_counts=True)
    return np.full(n, values[int(np.argmax(counts))], dtype=object)


def persistence_baseline(labels_all: np.ndarray, positions: np.ndarray, horizon: int) -> np.ndarray:
    """Predict the last label known at prediction time.

    For a same-day labeler (horizon 0) that is yesterday's label; for a labeler
    that looks H bars ahead, the label of day t-H-1 is the newest one known at t.
    """
    lag = horizon + 1
    src = positions - lag
    out = np.full(len(positions), "Low Vol", dtype=object)
    ok = src >= 0
    out[ok] = _as_str(labels_all[src[ok]])
    return out
