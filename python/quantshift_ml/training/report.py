"""The walk-forward report's statistics: per period, the margin and its interval, money.

All functions take the pooled walk-forward rows (truth, each predictor's
regimes, dates, month ids) and return JSON-native dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml import REGIMES
from quantshift_ml.training import evaluate as ev

BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 42
TURBULENT_REGIMES = ("High Vol", "Crisis", "Bear")


def _hits(y: np.ndarray, p: np.ndarray, months: np.ndarray, n_months: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Per month and class: correct predictions and support (n_months x classes)."""
    hits = np.zeros((n_months, len(REGIMES)))
    support = np.zeros((n_months, len(REGIMES)))
    for c, name in enumerate(REGIMES):
        is_c = y == name
        np.add.at(support[:, c], months[is_c], 1.0)
        np.add.at(hits[:, c], months[is_c & (p == name)], 1.0)
    return hits, support


def _balanced(hits: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Balanced accuracy per bootstrap draw, from weighted month counts (draws x classes)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, hits / np.where(support > 0, support, 1.0), np.nan)
    return np.nanmean(recall, axis=1)


def margin_interval(y: np.ndarray, model: np.ndarray, baseline: np.ndarray,
                    months: np.ndarray) -> dict[str, Any]:
    """Balanced-accuracy margin of model over baseline with a month-block bootstrap 95 % CI.

    Months, not days, are resampled (with replacement): days within a month share
    one fitted model and one market episode, so they are not independent.
    """
    ids, m = np.unique(months, return_inverse=True)
    hm, sup = _hits(y, model, m, len(ids))
    hb, _ = _hits(y, baseline, m, len(ids))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    w = rng.multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=BOOTSTRAP_DRAWS)
    diff = _balanced(w @ hm, w @ sup) - _balanced(w @ hb, w @ sup)
    point = _balanced(hm.sum(0, keepdims=True), sup.sum(0, keepdims=True))[0] - _balanced(
        hb.sum(0, keepdims=True), sup.sum(0, keepdims=True))[0]
    lo, hi = np.nanpercentile(diff, [2.5, 97.5])
    return {"margin": round(float(point), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "share_of_draws_above_0": round(float(np.mean(diff > 0)), 4),
            "method": f"month-block bootstrap, {BOOTSTRAP_DRAWS} draws, seed {BOOTSTRAP_SEED}"}


def score_interval(y: np.ndarray, pred: np.ndarray, months: np.ndarray) -> dict[str, Any]:
    """Balanced accuracy's month-block bootstrap 95 % interval (as ``margin_interval``)."""
    ids, m = np.unique(months, return_inverse=True)
    h, sup = _hits(y, pred, m, len(ids))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    w = rng.multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=BOOTSTRAP_DRAWS)
    lo, hi = np.nanpercentile(_balanced(w @ h, w @ sup), [2.5, 97.5])
    return {"ci95": [round(float(lo), 4), round(float(hi), 4)], "months": len(ids)}


def per_period(y: np.ndarray, preds: Mapping[str, np.ndarray], mask: np.ndarray
               ) -> dict[str, Any]:
    """Accuracy and balanced accuracy of every predictor on the masked rows."""
    out: dict[str, Any] = {"n": int(mask.sum())}
    for name, p in preds.items():
        r = ev.classification_report(y[mask], p[mask])
        out[name] = {"accuracy": r["accuracy"], "balanced_accuracy": r["balanced_accuracy"]}
    return out


def halves(dates: pd.DatetimeIndex, months: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The report's months split in two halves by count, named by their years."""
    ids = np.unique(months)
    cut = ids[len(ids) // 2]
    out = []
    for mask in (months < cut, months >= cut):
        if mask.any():
            yrs = dates[mask].year
            out.append((f"{yrs.min()}-{yrs.max()}", mask))
    return out


def strategy(regimes: np.ndarray, returns: np.ndarray) -> dict[str, Any]:
    """Long the index in Bull and Low Vol, flat (no return) in High Vol, Crisis and Bear.

    ``returns[i]`` is the index's simple return from day i's close to the next
    day's close, so the position decided at day i's close earns day i+1's move:
    next-day execution, nothing seen in advance. No costs, cash earns 0.
    """
    long = ~np.isin(np.asarray([str(r) for r in regimes]), TURBULENT_REGIMES)
    return performance(np.where(long, returns, 0.0), exposure=float(long.mean()))


def performance(daily: np.ndarray, exposure: float = 1.0) -> dict[str, Any]:
    """Annualised Sharpe ratio (risk-free 0), return and maximum drawdown."""
    r = np.nan_to_num(np.asarray(daily, dtype=float))
    sd = float(r.std(ddof=1)) if len(r) > 1 else 0.0
    equity = np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(equity)
    years = len(r) / 252.0
    return {"sharpe": round(float(r.mean() / sd * np.sqrt(252.0)) if sd else 0.0, 3),
            "annual_return": round(float(equity[-1] ** (1.0 / years) - 1.0) if years else 0.0, 4),
            "max_drawdown": round(float((equity / peak - 1.0).min()), 4),
            "exposure": round(exposure, 3)}


def outcomes_table(close: np.ndarray, index: pd.DatetimeIndex, pos: np.ndarray,
                   preds: Mapping[str, np.ndarray], settled: np.ndarray, strongest: str
                   ) -> dict[str, Any]:
    """Every predictor on what the market did next, and the model against ``strongest``.

    ``close``/``index``: the whole history's closes (forward outcomes need the bars
    after the last walk-forward day); ``pos``: the walk-forward days' rows in it.
    ``settled``: the walk-forward's truth (the model's own target).
    """
    from quantshift_ml.outcomes import OutcomeConfig, compare_arms, forward_outcomes, score_arm

    cfg = OutcomeConfig()
    frame = forward_outcomes(pd.Series(close, index=index), cfg).iloc[pos]
    table = {name: score_arm(p, frame, settled, cfg) for name, p in preds.items()}
    paired = compare_arms({"model": preds["model"], strongest: preds[strongest]}, frame,
                          settled, cfg)
    return {"config": cfg.as_dict(), "predictors": table,
            "model_monthly": monthly_outcomes(preds["model"], frame, cfg),
            "model_vs_strongest": {"baseline": strongest, **{
                k: {f: v.get(f) for f in ("difference", "ci95", "p_value", "winner",
                                          "verdict")}
                for k, v in paired["outcomes"].items()}}}


def monthly_outcomes(regimes: np.ndarray, frame: pd.DataFrame, cfg: Any) -> dict[str, Any]:
    """Per calendar month: the model's forward_vol accuracy and its position's return
    in excess of holding the index (the monitor's live thresholds are read off these)."""
    from quantshift_ml.outcomes import economic_returns
    from quantshift_ml.outcomes.definitions import correct

    right, known = correct("forward_vol", regimes, frame)
    ret = np.nan_to_num(frame["next_return"].to_numpy())
    daily, _ = economic_returns(regimes, ret, cfg)
    months = pd.DatetimeIndex(frame.index).strftime("%Y-%m")
    out: dict[str, Any] = {}
    for m in sorted(set(months)):
        k = months == m
        fv = right[k & known]
        out[m] = {"bars": int(k.sum()),
                  "forward_vol_accuracy": round(float(fv.mean()), 4) if len(fv) else None,
                  "excess_return": round(float(daily[k].sum() - ret[k].sum()), 4)}
    return out
