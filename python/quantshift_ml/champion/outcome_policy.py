"""The champion chosen on what the market did (issue 31).

Balanced accuracy on the settled state is the model's own target; the fleet's
primary outcome (``quantshift_champion_outcome``, by default the A/B test's
primary, ``economic``) is what a bot lives on. So the record scores every family
on every outcome (``outcomes.definitions``: the same bars, each value known only
once its bars have passed), and the policy compares families on the primary
one with a month-block bootstrap of the *difference* (of Sharpe ratios for
``economic``, of hit rates for ``forward_vol`` / ``forward_drawdown``), never two
point estimates:

* a family may be champion only if its balanced accuracy on the record is within
  ``guard`` of the best family's (the regimes must still mean what their names
  say to the bots that read them);
* the incumbent stays unless an eligible challenger beats it in at least
  ``confidence`` of the bootstrap draws; then the challenger most often ahead
  takes over (a tie goes to the simpler family); an incumbent that fails the
  guard gives way to the eligible family with the best point value.

``settled_state`` keeps issue 25's rule (``champion.choose`` with its margin).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantshift_ml.champion.families import RANK
from quantshift_ml.outcomes.compare import _month_weights, _sharpe
from quantshift_ml.outcomes.definitions import TRADING_DAYS, OutcomeConfig, economic_returns

OUTCOMES: tuple[str, ...] = ("economic", "forward_vol", "forward_drawdown", "settled_state")
CONFIDENCE = 0.8
"""Share of bootstrap draws in which a challenger must beat the incumbent (grid in
docs/model.md)."""
GUARD = 0.05
"""How far below the best family's record balanced accuracy a champion may be."""
DRAWS = 500
SEED = 11


@dataclass(frozen=True)
class Market:
    """What the market did after each bar of a history (positions as in the Dataset)."""

    next_return: np.ndarray
    turbulent: np.ndarray
    drawdown: np.ndarray
    horizon: int

    @classmethod
    def of(cls, close: Any, config: OutcomeConfig | None = None) -> Market:
        from quantshift_ml.outcomes.definitions import forward_outcomes

        cfg = config or OutcomeConfig()
        f = forward_outcomes(close, cfg)
        return cls(f["next_return"].to_numpy(dtype=float), f["turbulent"].to_numpy(dtype=float),
                   f["drawdown_event"].to_numpy(dtype=float), cfg.horizon)


def values(outcome: str, regimes: np.ndarray, pos: np.ndarray, market: Market
           ) -> tuple[np.ndarray, np.ndarray]:
    """(value per row, the newest bar it needs) of a family's calls on rows ``pos``:
    the day's strategy return for ``economic`` (next-bar execution, with costs), 1/0
    for a right/wrong call for the forward outcomes (NaN where never known)."""
    r = np.asarray([str(x) for x in regimes], dtype=object)
    if outcome == "economic":
        ret = np.nan_to_num(market.next_return[pos])
        daily, _ = economic_returns(r, ret)
        return np.where(np.isnan(market.next_return[pos]), np.nan, daily), pos + 1
    truth, calls = ((market.turbulent, ("Bear", "High Vol", "Crisis"))
                    if outcome == "forward_vol" else (market.drawdown, ("Bear", "Crisis")))
    t = truth[pos]
    right = (np.isin(r, calls) == (t == 1.0)).astype(float)
    return np.where(np.isnan(t), np.nan, right), pos + market.horizon


def statistic(outcome: str, v: np.ndarray) -> float:
    """Sharpe ratio (annualised) for ``economic``, the hit rate otherwise."""
    if len(v) < 2:
        return float("nan")
    if outcome != "economic":
        return float(np.mean(v))
    sd = float(np.std(v, ddof=1))
    return float(np.mean(v) / sd * np.sqrt(TRADING_DAYS)) if sd else 0.0


def difference(outcome: str, a: np.ndarray, b: np.ndarray, months: np.ndarray
               ) -> dict[str, Any]:
    """a's statistic minus b's on the same rows: point, month-block 95 % interval, and the
    share of draws in which a is ahead."""
    if len(a) < 2:
        return {"difference": None, "ci95": None, "share_ahead": 0.0}
    inverse, w = _month_weights(months, DRAWS, SEED)
    k = w.shape[1]

    def sums(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.bincount(inverse, weights=v, minlength=k),
                np.bincount(inverse, weights=v * v, minlength=k))

    n = np.bincount(inverse, minlength=k).astype(float)
    (a1, a2), (b1, b2) = sums(a), sums(b)
    if outcome == "economic":
        draws = _sharpe(w, a1, a2, n) - _sharpe(w, b1, b2, n)
    else:
        draws = (w @ (a1 - b1)) / np.maximum(w @ n, 1.0)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"difference": round(statistic(outcome, a) - statistic(outcome, b), 4),
            "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "share_ahead": round(float(np.mean(draws > 0)), 4)}


def choose(stats: Mapping[str, float], balanced: Mapping[str, float],
           ahead: Mapping[str, float], incumbent: str, *, confidence: float = CONFIDENCE,
           guard: float = GUARD) -> str:
    """The family to ship (module docstring); ``ahead[f]``: share of draws f beats the
    incumbent on the primary outcome."""
    if not stats or not balanced:
        return incumbent
    best = max(balanced.values())
    eligible = [f for f in stats if balanced.get(f, -1.0) >= best - guard]
    if incumbent not in eligible:
        return max(eligible, key=lambda f: (stats[f], -RANK[f]))
    challengers = [f for f in eligible if f != incumbent and ahead.get(f, 0.0) >= confidence]
    if not challengers:
        return incumbent
    return max(challengers, key=lambda f: (ahead[f], -RANK[f]))
