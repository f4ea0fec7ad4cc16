"""The walk-forward report's sections: stress periods, economics, halves, the champion row.

Each takes the pooled out-of-time predictions (one array per row, the same days)
and returns a JSON-native section; ``monthly`` collects the predictions and
assembles the report. Kept apart so the walk-forward's collection reads alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml.champion import policy as ch
from quantshift_ml.training import evaluate as ev
from quantshift_ml.training import report as rp
from quantshift_ml.training.pipeline import Dataset

STRESS_PERIODS: dict[str, tuple[str, str]] = {
    "2008-09..2008-12": ("2008-09-01", "2008-12-31"),
    "2011-08..2011-10": ("2011-08-01", "2011-10-31"),
    "2018-02..2018-03": ("2018-02-01", "2018-03-31"),
}

def stress(y: np.ndarray, preds: dict[str, np.ndarray], dates: pd.DatetimeIndex
            ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (a, b) in STRESS_PERIODS.items():
        m = (dates >= pd.Timestamp(a)) & (dates <= pd.Timestamp(b))
        if m.any():
            r = ev.classification_report(y[m], preds["model"][m])
            out[name] = {**rp.per_period(y, preds, m),
                         "model_recall": {c: v["recall"] for c, v in r["per_class"].items()
                                          if v["support"]}}
    return out


def economics(full: Dataset, pos: np.ndarray, preds: dict[str, np.ndarray]) -> dict[str, Any]:
    close = full.bars["Close"].to_numpy(dtype=float)
    nxt = np.minimum(pos + 1, len(close) - 1)
    rets = close[nxt] / close[pos] - 1.0
    out: dict[str, Any] = {
        "strategy": "long the index while the predicted regime is Bull or Low Vol, flat in "
                    "High Vol, Crisis and Bear; decided at the close, executed at the next "
                    "close; no costs, cash earns 0",
        "buy_and_hold": rp.performance(rets)}
    for name, p in preds.items():
        out[name] = rp.strategy(p, rets)
    return out


def halves(y: np.ndarray, preds: dict[str, np.ndarray], dates: pd.DatetimeIndex,
            months: np.ndarray, best_name: str) -> dict[str, Any]:
    """Every row in each half, and the model's and the champion's margins there."""
    out = {}
    for name, mask in rp.halves(dates, months):
        out[name] = {**rp.per_period(y, preds, mask), **{
            key: rp.margin_interval(y[mask], preds[row][mask], preds[best_name][mask],
                                    months[mask])
            for key, row in (("margin_vs_strongest", "model"),
                             ("champion_vs_strongest", "champion"))}}
    return out


def champion_report(y: np.ndarray, preds: dict[str, np.ndarray], best_name: str,
                     months: np.ndarray, policy: dict[str, Any]) -> dict[str, Any]:
    """The champion row's scores, its margin over the strongest baseline and over each
    fixed family (month-block intervals), and the policy that produced it."""
    champ = preds["champion"]
    fixed = {f: ch.WALKFORWARD_ROWS[f] for f in policy["families"]}
    return {**ev.classification_report(y, champ), "policy": policy,
            "vs_strongest": {"name": best_name,
                             **rp.margin_interval(y, champ, preds[best_name], months)},
            "vs_family": {f: rp.margin_interval(y, champ, preds[row], months)
                          for f, row in fixed.items()}}
