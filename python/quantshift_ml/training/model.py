"""The model bundle: a fitted estimator plus what is needed to use it safely.

The bundle is what gets pickled (joblib). It carries its feature list and class
list so a host can refuse to score rows with the wrong columns instead of
silently producing nonsense. ``bundle["model"]`` is a ``RegimeModel``: the
estimator (a Random Forest by default) and, for the ``hmm`` labeler, the rule
that composes the five regimes from the learned volatility state.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier

from quantshift_ml.model import filterspec
from quantshift_ml.model.features import HMM_FILTER, with_hmm_filter
from quantshift_ml.model.regimes import RegimeModel, RegimeRule, regime_model, regime_shares
from quantshift_ml.training.config import ModelParams

__all__ = ["regime_model"]

BUNDLE_FORMAT = 2
"""2: ``model`` is a RegimeModel (1: a bare RandomForestClassifier)."""


def labels_of(y: np.ndarray) -> np.ndarray:
    return np.asarray([str(v) for v in y], dtype=object)


TREE_ROWS = 1000
"""Rows each tree's bootstrap sample holds at most, unless ``max_samples`` is set..."""
CAP_ABOVE = 2000
"""...for training sets larger than this (the ``hmm`` target's expanding history;
a 2-year window with stress memory stays below it and keeps the full bootstrap)."""


def forest_kwargs(params: ModelParams, n_rows: int) -> dict[str, Any]:
    """scikit-learn arguments; the bootstrap is capped at ``TREE_ROWS`` rows per tree.

    Why the cap: with the ``hmm`` target the forest trains on every settled day
    since the data begin (4 700 rows in 2018) and a full bootstrap makes each of
    the trees about 5x slower for no measured gain (docs/model.md), while the
    walk-forward must retrain 200 times within two minutes.
    """
    kw = asdict(params)
    if kw["max_samples"] is None and n_rows > CAP_ABOVE:
        kw["max_samples"] = TREE_ROWS / n_rows
    return kw


def fit_forest(x: np.ndarray, y: np.ndarray, params: ModelParams) -> RandomForestClassifier:
    """Fit a seeded Random Forest; labels are strings, features float64."""
    model = RandomForestClassifier(**forest_kwargs(params, len(x)))
    model.fit(x, labels_of(y))
    return model


def make_ensemble(params: ModelParams, n_rows: int) -> Any:
    """Soft vote of the forest, histogram gradient boosting and a regularised logistic
    regression (the old runbook's "multi-model ensemble"), all seeded."""
    from sklearn.ensemble import HistGradientBoostingClassifier, VotingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return VotingClassifier(voting="soft", estimators=[
        ("forest", RandomForestClassifier(**forest_kwargs(params, n_rows))),
        ("hgb", HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05,
                                               max_leaf_nodes=15, l2_regularization=1.0,
                                               random_state=params.random_state)),
        ("logit", make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))),
    ])


def wrap(estimator: Any, features: list[str], rule: RegimeRule | None,
         labels: np.ndarray | None = None, *, combine: str = "none") -> RegimeModel:
    """The estimator as a RegimeModel.

    With a rule, ``labels`` (the five regimes of the training rows) give the
    priors of the balanced decision rule (see ``RegimeModel``), and
    ``combine="max"`` makes the ``hmm_filter`` input the counterpart.
    """
    if rule is None:
        return RegimeModel(estimator, features)
    priors = regime_shares(labels) if labels is not None and len(labels) else None
    counterpart = HMM_FILTER if combine == "max" and HMM_FILTER in features else None
    return RegimeModel(estimator, features, rule, priors=priors, counterpart=counterpart)


def make_bundle(model: RegimeModel, features: list[str], labeler: dict[str, Any]
                ) -> dict[str, Any]:
    return {
        "format": BUNDLE_FORMAT,
        "model": model,
        "features": list(features),
        "classes": [str(c) for c in model.classes_],
        "labeler": labeler,
    }


def make_filter_bundle(spec: dict[str, Any], labeler: dict[str, Any]) -> dict[str, Any]:
    """A filter family's bundle: the same keys as the forest's, its model the spec's numbers."""
    return {"format": BUNDLE_FORMAT, "family": spec["family"],
            "model": filterspec.FilterModel(spec), "features": list(filterspec.INPUTS),
            "classes": [str(c) for c in filterspec.FilterModel(spec).classes_],
            "labeler": labeler}


def family_of(bundle_or_meta: dict[str, Any]) -> str:
    """A bundle's (or metadata's) family; releases from before families are forests."""
    return str(bundle_or_meta.get("family") or "forest")


def bundle_model(bundle: dict[str, Any]) -> Any:
    """What predicts for the bundle: a RegimeModel, or a filter's ``FilterModel``."""
    if family_of(bundle) in filterspec.FILTER_FAMILIES:
        return bundle["model"]
    return regime_model(bundle)


def inputs_frame(bundle: dict[str, Any], bars: pd.DataFrame, features: pd.DataFrame
                 ) -> pd.DataFrame:
    """``features`` with every input the bundle reads: the ``hmm_filter`` column from the
    model's own HMM fit, and for a filter family its own P(turbulent)."""
    fitted = (bundle.get("labeler") or {}).get("fitted")
    frame = with_hmm_filter(features, bars, fitted)
    if family_of(bundle) in filterspec.FILTER_FAMILIES:
        frame = filterspec.with_column(bundle["model"].spec, bars, frame)
    return frame


def predict(bundle: dict[str, Any], features: pd.DataFrame) -> np.ndarray:
    """Predicted regimes for feature rows (columns taken by name, in the bundle's order)."""
    missing = [f for f in bundle["features"] if f not in features.columns]
    if missing:
        raise ValueError(f"model expects features {missing} that the data does not provide")
    x = features[bundle["features"]].to_numpy(dtype=float)
    return np.asarray(bundle_model(bundle).predict(x), dtype=object)


def predict_proba(bundle: dict[str, Any], features: pd.DataFrame) -> list[dict[str, float]]:
    """Class probabilities per row as plain dicts (JSON-native)."""
    x = features[bundle["features"]].to_numpy(dtype=float)
    model = bundle_model(bundle)
    proba = model.predict_proba(x)
    classes = [str(c) for c in model.classes_]
    return [{c: round(float(p), 4) for c, p in zip(classes, row, strict=True)} for row in proba]


def top_features(model: Any, names: list[str], k: int = 5) -> list[dict[str, Any]]:
    """The k most important features by mean decrease in impurity (the forest's, also
    inside an ensemble)."""
    est = getattr(model, "estimator", model)
    if hasattr(est, "named_estimators_"):
        est = est.named_estimators_["forest"]
    if not hasattr(est, "feature_importances_"):
        return []
    imp = np.asarray(est.feature_importances_, dtype=float)
    order = np.argsort(imp)[::-1][:k]
    return [{"feature": names[i], "importance": round(float(imp[i]), 4)} for i in order]
