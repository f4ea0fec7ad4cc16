"""Paired comparison of two arms (or families) on every outcome, on the same bars.

Accuracy-like outcomes (``forward_vol``, ``forward_drawdown``, ``settled_state``):
McNemar's exact test on the discordant bars and the month-block bootstrap
interval of the accuracy difference (``ab_stats``), as the A/B test always did.

``economic``: both arms' daily strategy returns on the same bars. The decision
statistic is the difference of their annualised Sharpe ratios; the difference of
their mean daily returns (annualised) is reported beside it. Both intervals are
month-block bootstraps (whole calendar months resampled with replacement, the
days of a month move together); the p-value is the two-sided bootstrap share of
draws on the far side of 0, ``2 * min(P*(d <= 0), P*(d >= 0))`` with the usual
``(k + 1) / (B + 1)`` correction, so it is never reported as exactly 0. A
bootstrap rather than Ledoit and Wolf's HAC test keeps one resampling scheme for
every outcome and every report of the product.

A winner is named only when the test is significant at ``alpha``, its interval
excludes 0 and the record covers at least ``MIN_MONTHS`` months.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from quantshift_ml.outcomes.definitions import (
    OUTCOMES,
    TRADING_DAYS,
    Calls,
    OutcomeConfig,
    correct,
    economic_returns,
    score_arm,
)
from quantshift_ml.outcomes.stats import (
    ALPHA,
    BOOTSTRAP,
    MIN_MONTHS,
    SEED,
    block_bootstrap_diff,
    mcnemar_exact,
)

if TYPE_CHECKING:
    import pandas as pd

LABELS = {"forward_vol": "calm/turbulent against the next 20 bars' realised volatility",
          "forward_drawdown": "Bear/Crisis calls against a fall deeper than the depth",
          "economic": "the bot's regime-conditioned position, next-bar execution, costs",
          "settled_state": "the model's own target (the settled hmm state)"}


def _verdict(out: dict[str, Any], names: tuple[str, str], alpha: float) -> dict[str, Any]:
    """Winner and a sentence, from ``difference``, ``ci95``, ``p_value``, ``months``."""
    n, p, ci = out["samples"], out["p_value"], out["ci95"]
    if not n or p is None or ci is None:
        return {"winner": None, "verdict": "no scored samples yet"}
    lo, hi = ci
    diff = f"difference {out['difference']:+.3f} (95 % interval {lo:+.3f}..{hi:+.3f})"
    if p < alpha and (lo > 0 or hi < 0) and out["months"] >= MIN_MONTHS:
        winner = names[0] if out["difference"] > 0 else names[1]
        return {"winner": winner,
                "verdict": f"{winner} wins: {diff}, {out['test']} p = {p:.2g} on {n} bars"}
    why = (f"p = {p:.2g} >= {alpha:g}" if p >= alpha else
           f"{out['months']} month(s) of bars (need {MIN_MONTHS})"
           if out["months"] < MIN_MONTHS else "the interval holds 0")
    return {"winner": None, "verdict": f"not yet significant: {diff}, {why}, {n} bars"}


def paired_accuracy(a_right: np.ndarray, b_right: np.ndarray, months: np.ndarray,
                    names: tuple[str, str] = ("ml", "rules"), alpha: float = ALPHA
                    ) -> dict[str, Any]:
    """McNemar and the month-block interval of accuracy(a) - accuracy(b)."""
    a, b = np.asarray(a_right, dtype=bool), np.asarray(b_right, dtype=bool)
    n = len(a)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    out: dict[str, Any] = {
        "samples": n, "months": len(set(np.asarray(months).tolist())),
        "test": "McNemar exact (two-sided)", "discordant": {names[0]: a_only, names[1]: b_only},
        "difference": round(float(a.mean() - b.mean()), 4) if n else None,
        "p_value": mcnemar_exact(a_only, b_only) if n else None,
        "ci95": list(block_bootstrap_diff(a, b, np.asarray(months))) if n else None}
    return {**out, **_verdict(out, names, alpha)}


def _month_weights(months: np.ndarray, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(inverse month index per bar, draws x months resampling counts)."""
    keys, inverse = np.unique(np.asarray(months), return_inverse=True)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(keys), size=(draws, len(keys)))
    weights = np.zeros((draws, len(keys)))
    np.add.at(weights, (np.repeat(np.arange(draws), len(keys)), picks.ravel()), 1.0)
    return inverse, weights


def _sharpe(w: np.ndarray, s1: np.ndarray, s2: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Annualised Sharpe ratio per draw from per-month sums of r and r**2."""
    count, total, squares = w @ n, w @ s1, w @ s2
    mean = total / count
    var = np.maximum((squares - count * mean ** 2) / np.maximum(count - 1.0, 1.0), 0.0)
    sd = np.sqrt(var)
    return np.where(sd > 0, mean / np.where(sd > 0, sd, 1.0), 0.0) * np.sqrt(TRADING_DAYS)


def _p_two_sided(stats: np.ndarray) -> float:
    k = min(int(np.sum(stats <= 0)), int(np.sum(stats >= 0)))
    return float(min(1.0, 2.0 * (k + 1) / (len(stats) + 1)))


def economic_pair(a_daily: np.ndarray, b_daily: np.ndarray, months: np.ndarray,
                  names: tuple[str, str] = ("ml", "rules"), alpha: float = ALPHA,
                  draws: int = BOOTSTRAP, seed: int = SEED) -> dict[str, Any]:
    """Sharpe difference (decision) and return difference of a and b, month-block."""
    a, b = np.asarray(a_daily, dtype=float), np.asarray(b_daily, dtype=float)
    n = len(a)
    out: dict[str, Any] = {"samples": n, "months": len(set(np.asarray(months).tolist())),
                           "test": "month-block bootstrap of the Sharpe difference",
                           "difference": None, "ci95": None, "p_value": None,
                           "return_difference": None, "return_ci95": None}
    if n < 2:
        return {**out, **_verdict(out, names, alpha)}
    inverse, w = _month_weights(months, draws, seed)
    k = w.shape[1]
    sums = {key: np.bincount(inverse, weights=v, minlength=k)
            for key, v in (("a", a), ("b", b), ("a2", a * a), ("b2", b * b))}
    per = np.bincount(inverse, minlength=k).astype(float)
    one = np.ones((1, k))
    sharpe = _sharpe(w, sums["a"], sums["a2"], per) - _sharpe(w, sums["b"], sums["b2"], per)
    point = float((_sharpe(one, sums["a"], sums["a2"], per)
                   - _sharpe(one, sums["b"], sums["b2"], per))[0])
    ret = (w @ (sums["a"] - sums["b"])) / (w @ per) * TRADING_DAYS
    lo, hi = np.percentile(sharpe, [2.5, 97.5])
    rlo, rhi = np.percentile(ret, [2.5, 97.5])
    out.update({"difference": round(point, 3), "ci95": [round(float(lo), 3), round(float(hi), 3)],
                "p_value": round(_p_two_sided(sharpe), 4),
                "return_difference": round(float((a - b).mean() * TRADING_DAYS), 4),
                "return_ci95": [round(float(rlo), 4), round(float(rhi), 4)],
                "method": f"{draws} draws, seed {seed}"})
    return {**out, **_verdict(out, names, alpha)}


def compare_arms(arms: Mapping[str, Calls], frame: pd.DataFrame,
                 settled: Calls | None = None, config: OutcomeConfig | None = None,
                 primary: str = "economic", alpha: float = ALPHA) -> dict[str, Any]:
    """Both arms on every outcome, the paired comparison of each, and the verdict.

    ``arms``: exactly two named regime sequences aligned with ``frame``'s rows
    (``forward_outcomes`` restricted to the scored bars, dates as index).
    """
    import pandas as pd  # imported on use: the service starts without pandas

    if primary not in OUTCOMES:
        raise ValueError(f"primary outcome {primary!r} is not one of {', '.join(OUTCOMES)}")
    names = tuple(arms)
    if len(names) != 2:
        raise ValueError("compare_arms takes exactly two arms")
    first, second = (np.asarray([str(x) for x in arms[k]], dtype=object) for k in names)
    months = np.asarray(pd.DatetimeIndex(frame.index).strftime("%Y-%m"))
    figures = {k: score_arm(arms[k], frame, settled, config) for k in names}
    out: dict[str, Any] = {}
    for outcome in OUTCOMES:
        if outcome == "economic":
            ret = frame["next_return"].to_numpy()
            known = ~np.isnan(ret)
            da, _ = economic_returns(first[known], ret[known], config)
            db, _ = economic_returns(second[known], ret[known], config)
            pair = economic_pair(da, db, months[known], (names[0], names[1]), alpha)
        else:
            ra, known = correct(outcome, first, frame, None if settled is None else
                                np.asarray(settled, dtype=object))
            rb, _ = correct(outcome, second, frame, None if settled is None else
                            np.asarray(settled, dtype=object))
            pair = paired_accuracy(ra[known], rb[known], months[known],
                                   (names[0], names[1]), alpha)
        out[outcome] = {"label": LABELS[outcome], "primary": outcome == primary,
                        "arms": {k: figures[k][outcome] for k in names}, **pair}
    main = out[primary]
    return {"outcomes": out, "primary": primary, "winner": main["winner"],
            "verdict": f"{primary}: {main['verdict']}",
            "config": (config or OutcomeConfig()).as_dict()}
