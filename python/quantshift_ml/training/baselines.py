"""Fair baselines: what a model must beat, each fitted only on data known at the time.

Every baseline predicts on the same rows as the model. For a labeler with a
rule (``hmm``) a baseline predicts the learned axis (calm / turbulent) and the
same ruled trend composes the five regimes, exactly as for the model, so the
comparison isolates the part the model claims to know. The baselines:

``majority``
    the training rows' most frequent target.
``persistence``
    the newest target known at prediction time (``horizon + 1`` bars old),
    composed with today's trend rule.
``rule``
    the old same-day rule (``rules`` labeler) applied to today's features,
    mapped onto the target (its Crisis/High Vol are "turbulent"), then composed.
``rv20_threshold``
    one threshold on 20-day realized volatility, tuned on the training rows for
    balanced accuracy (the strongest baseline of 2001-2009 in the evidence).
``hmm_filter`` / ``hmm_filter_tuned`` (``hmm`` labeler)
    the HMM's own causal forward-filtered P(turbulent) above 0.5, and above a
    cut-off tuned on the training rows: the target's classic counterpart.
``har_rv`` (``forward`` labeler)
    HAR-RV (Corsi 2009) forecast of the next ``horizon`` days' volatility,
    fitted by least squares on the training rows, thresholded with the labeler's
    volatility thresholds: the target's classic counterpart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml import hmm
from quantshift_ml.labels import ForwardLabeler, HmmLabeler, Labeler, RulesLabeler
from quantshift_ml.regimes import TURBULENT

TUNE_QUANTILES = np.linspace(0.05, 0.95, 37)
"""Candidate thresholds of a tuned one-feature baseline: training-row quantiles."""


def balanced_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (0.0 for no rows)."""
    y = np.asarray([str(v) for v in y], dtype=object)
    p = np.asarray([str(v) for v in p], dtype=object)
    recalls = [float((p[y == c] == c).mean()) for c in np.unique(y)]
    return float(np.mean(recalls)) if recalls else 0.0


def majority(y: np.ndarray) -> Any:
    values, counts = np.unique(np.asarray([str(v) for v in y], dtype=object),
                               return_counts=True)
    return values[int(np.argmax(counts))]


def tune_threshold(values: np.ndarray, y: np.ndarray) -> tuple[float, Any, Any]:
    """Threshold on one feature, and the classes below/above it, best balanced accuracy.

    The classes on each side are the training majority there, so the same code
    serves a binary target (calm below, turbulent above) and five regimes.
    Vectorised on class codes: the walk-forward tunes two of these every month.
    """
    v = np.asarray(values, dtype=float)
    names, codes = np.unique(np.asarray([str(t) for t in y], dtype=object), return_inverse=True)
    k = len(names)
    support = np.bincount(codes, minlength=k).astype(float)
    present = support > 0
    overall = int(np.argmax(support))
    best: tuple[float, float, int, int] = (-1.0, float(np.median(v)) if len(v) else 0.0,
                                           overall, overall)
    for q in np.unique(np.quantile(v, TUNE_QUANTILES)) if len(v) else []:
        above = v > q
        if above.all() or not above.any():
            continue
        lo = int(np.argmax(np.bincount(codes[~above], minlength=k)))
        hi = int(np.argmax(np.bincount(codes[above], minlength=k)))
        pred = np.where(above, hi, lo)
        hits = np.bincount(codes[pred == codes], minlength=k)
        score = float(np.mean(hits[present] / support[present]))
        if score > best[0]:
            best = (score, float(q), lo, hi)
    return best[1], names[best[2]], names[best[3]]


def apply_threshold(values: np.ndarray, fitted: tuple[float, Any, Any]) -> np.ndarray:
    q, below, above = fitted
    return np.where(np.asarray(values, dtype=float) > q, above, below).astype(object)


@dataclass
class BaselineInputs:
    """Everything the baselines may use for one evaluation, all known at the time.

    ``train`` and ``rows`` are positions into ``features``; ``target`` holds the
    estimator's target as known at training time (NaN where not settled).
    ``persist_from`` is what persistence reads (default ``target``); the monthly
    walk-forward passes the final state, which is at least as well informed as
    what was known then, so persistence is never weakened by the monthly refits.
    """

    bars: pd.DataFrame
    features: pd.DataFrame
    target: np.ndarray
    train: np.ndarray
    rows: np.ndarray
    labeler: Labeler
    fitted: Any = None
    persist_from: np.ndarray | None = None


def _persistence(b: BaselineInputs) -> np.ndarray:
    known_target = b.target if b.persist_from is None else b.persist_from
    src = b.rows - (b.labeler.horizon + 1)
    out = np.full(len(b.rows), majority(b.target[b.train]), dtype=object)
    known = src >= 0
    known[known] = pd.notna(known_target[src[known]])
    out[known] = known_target[src[known]]
    return out


def _rule(b: BaselineInputs) -> np.ndarray:
    rule = RulesLabeler().predict_from_features(b.features.iloc[b.rows])
    composer = b.labeler.rule
    return rule if composer is None else composer.from_volatility(rule)


def _filtered(b: BaselineInputs) -> np.ndarray:
    """P(turbulent) filtered causally with the HMM fitted at training time."""
    if "hmm_filter" in b.features.columns:  # computed with these very parameters
        return b.features["hmm_filter"].to_numpy(dtype=float)
    last = int(max(b.rows.max(), b.train.max())) + 1
    p = np.full(len(b.features), np.nan)
    p[1:last] = hmm.filtered(b.fitted, hmm.returns_pct(b.bars["Close"].iloc[:last])[1:])
    return p


def _har_rv(b: BaselineInputs, lab: ForwardLabeler) -> np.ndarray:
    """HAR-RV forecast of the next ``horizon`` days' volatility, thresholded."""
    r2 = pd.Series(np.log(b.bars["Close"]).diff().to_numpy() ** 2, index=b.bars.index)
    x = pd.DataFrame({"d": r2, "w": r2.rolling(5).mean(), "m": r2.rolling(22).mean()})
    h = lab.horizon
    fwd = r2[::-1].rolling(h).mean()[::-1].shift(-1)  # mean r^2 over t+1..t+h
    xf = np.c_[np.ones(len(x)), x.to_numpy()]
    tr = b.train[np.isfinite(xf[b.train]).all(axis=1) & np.isfinite(fwd.to_numpy()[b.train])]
    coef, *_ = np.linalg.lstsq(xf[tr], fwd.to_numpy()[tr], rcond=None)
    vol = np.sqrt(np.clip(xf[b.rows] @ coef, 0.0, None) * 252.0)
    y_tr = b.target[b.train]
    quiet = y_tr[~np.isin(y_tr.astype(str), ["Crisis", "High Vol"])]
    calm = majority(quiet) if len(quiet) else "Low Vol"
    out = np.full(len(b.rows), calm, dtype=object)
    out[vol > lab.high_vol] = "High Vol"
    out[vol > lab.crisis_vol] = "Crisis"
    return out


def predict_all(b: BaselineInputs) -> dict[str, np.ndarray]:
    """Every baseline's target prediction for ``b.rows`` (compose them with ``finish``)."""
    y_tr = b.target[b.train]
    rv = b.features["realized_vol_20"].to_numpy(dtype=float)
    out = {
        "majority": np.full(len(b.rows), majority(y_tr), dtype=object),
        "persistence": _persistence(b),
        "rule": _rule(b),
        "rv20_threshold": apply_threshold(rv[b.rows], tune_threshold(rv[b.train], y_tr)),
    }
    if isinstance(b.labeler, HmmLabeler) and b.fitted is not None:
        p = _filtered(b)
        out["hmm_filter"] = np.where(p[b.rows] > 0.5, TURBULENT, "calm").astype(object)
        out["hmm_filter_tuned"] = apply_threshold(p[b.rows], tune_threshold(p[b.train], y_tr))
    if isinstance(b.labeler, ForwardLabeler):
        out["har_rv"] = _har_rv(b, b.labeler)
    return out


def finish(b: BaselineInputs, predictions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Compose target predictions into regimes with the labeler's rule (if any)."""
    rule = b.labeler.rule
    if rule is None:
        return predictions
    feats = b.features.iloc[b.rows]
    return {k: rule.compose_frame(np.asarray(v, dtype=object) == TURBULENT, feats)
            for k, v in predictions.items()}
