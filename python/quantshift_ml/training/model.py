"""The model bundle: a fitted Random Forest plus what is needed to use it safely.

The bundle is what gets pickled (joblib). It carries its feature list and class
list so a host can refuse to score rows with the wrong columns instead of
silently producing nonsense.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier

from quantshift_ml.training.config import ModelParams

BUNDLE_FORMAT = 1


def fit_forest(x: np.ndarray, y: np.ndarray, params: ModelParams) -> RandomForestClassifier:
    """Fit a seeded Random Forest; labels are strings, features float64."""
    model = RandomForestClassifier(**asdict(params))
    model.fit(x, np.asarray([str(v) for v in y], dtype=object))
    return model


def make_bundle(model: RandomForestClassifier, features: list[str], labeler: dict[str, Any]
                ) -> dict[str, Any]:
    return {
        "format": BUNDLE_FORMAT,
        "model": model,
        "features": list(features),
        "classes": [str(c) for c in model.classes_],
        "labeler": labeler,
    }


def predict(bundle: dict[str, Any], features: pd.DataFrame) -> np.ndarray:
    """Predicted regimes for feature rows (columns taken by name, in the bundle's order)."""
    missing = [f for f in bundle["features"] if f not in features.columns]
    if missing:
        raise ValueError(f"model expects features {missing} that the data does not provide")
    x = features[bundle["features"]].to_numpy(dtype=float)
    return np.asarray(bundle["model"].predict(x), dtype=object)


def predict_proba(bundle: dict[str, Any], features: pd.DataFrame) -> list[dict[str, float]]:
    """Class probabilities per row as plain dicts (JSON-native)."""
    x = features[bundle["features"]].to_numpy(dtype=float)
    proba = bundle["model"].predict_proba(x)
    classes = [str(c) for c in bundle["model"].classes_]
    return [{c: round(float(p), 4) for c, p in zip(classes, row, strict=True)} for row in proba]


def top_features(model: RandomForestClassifier, names: list[str], k: int = 5
                 ) -> list[dict[str, Any]]:
    """The k most important features by mean decrease in impurity."""
    imp = np.asarray(model.feature_importances_, dtype=float)
    order = np.argsort(imp)[::-1][:k]
    return [{"feature": names[i], "importance": round(float(imp[i]), 4)} for i in order]
