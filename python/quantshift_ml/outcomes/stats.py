"""Paired comparison of two arms scored on the same bars.

Both arms answer every request (the service computes both and serves one), so
each bar gives a *pair* of outcomes: the right test is McNemar's on the
discordant pairs (bars where exactly one arm was right), not a two-proportion
test that ignores the pairing. The exact form (binomial on the discordant
pairs, two-sided, as ``statsmodels``' ``mcnemar(exact=True)``) is valid at any
sample size. The confidence interval of the accuracy difference is a
month-block bootstrap (days of one month move together, so resampling single
days would understate the uncertainty), seeded.

A winner needs p < ``ALPHA``, a month-block interval that excludes 0 and at least
``MIN_MONTHS`` months. Re-testing the same growing record every day (as the
automatic fallback does) makes a false alarm more likely than 5 % over a long
run; the interval and month requirements damp that, they do not remove it.

``needed_samples``: how many paired bars the observed effect would need for 80 %
power at the documented level (Connor 1987's sample size for McNemar's test),
so "not yet significant" comes with a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

ALPHA = 0.05
"""Significance level of the paired test (two-sided)."""
MIN_MONTHS = 2
"""Calendar months a winner needs: McNemar counts days as independent, and days of
one month are not; the month-block interval must also exclude 0, and with one
month it has nothing to resample."""
POWER = 0.80
BOOTSTRAP = 2000
SEED = 20261201


def mcnemar_exact(ml_only: int, rules_only: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts."""
    from scipy.stats import binom

    n = ml_only + rules_only
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(ml_only, rules_only), n, 0.5)))


def needed_samples(p_ml_only: float, p_rules_only: float, alpha: float = ALPHA,
                   power: float = POWER) -> int | None:
    """Paired samples for ``power`` at ``alpha`` given discordant shares (None: no effect)."""
    from scipy.stats import norm

    delta = p_ml_only - p_rules_only
    pd_ = p_ml_only + p_rules_only
    if delta == 0 or pd_ <= 0:
        return None
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    n = (za * math.sqrt(pd_) + zb * math.sqrt(max(pd_ - delta * delta, 0.0))) ** 2 / delta ** 2
    return math.ceil(n)


def block_bootstrap_diff(ml_right: np.ndarray, rules_right: np.ndarray, months: np.ndarray,
                         n: int = BOOTSTRAP, seed: int = SEED) -> tuple[float, float]:
    """95 % interval of accuracy(ml) - accuracy(rules), resampling whole months."""
    diff = ml_right.astype(float) - rules_right.astype(float)
    keys, inverse = np.unique(months, return_inverse=True)
    sums = np.bincount(inverse, weights=diff, minlength=len(keys))
    counts = np.bincount(inverse, minlength=len(keys)).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(keys), size=(n, len(keys)))
    stats = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return round(float(lo), 4), round(float(hi), 4)


@dataclass(frozen=True)
class Paired:
    """Both arms' correctness on the same bars."""

    ml_right: np.ndarray
    rules_right: np.ndarray
    months: np.ndarray

    def report(self, alpha: float = ALPHA) -> dict[str, Any]:
        n = len(self.ml_right)
        ml_only = int(np.sum(self.ml_right & ~self.rules_right))
        rules_only = int(np.sum(~self.ml_right & self.rules_right))
        out: dict[str, Any] = {
            "samples": n, "both_right": int(np.sum(self.ml_right & self.rules_right)),
            "ml_only": ml_only, "rules_only": rules_only,
            "both_wrong": int(np.sum(~self.ml_right & ~self.rules_right)),
            "months": len(set(self.months.tolist())),
            "test": "McNemar exact (two-sided)", "alpha": alpha,
            "p_value": mcnemar_exact(ml_only, rules_only) if n else None,
            "difference": round(float(self.ml_right.mean() - self.rules_right.mean()), 4)
            if n else None, "ci95": None}
        if n:
            out["ci95"] = block_bootstrap_diff(self.ml_right, self.rules_right, self.months)
        return {**out, **verdict(out, alpha)}


def verdict(paired: dict[str, Any], alpha: float = ALPHA) -> dict[str, Any]:
    """A winner only when the paired test is significant at ``alpha``."""
    n, p = paired["samples"], paired["p_value"]
    if not n or p is None:
        return {"winner": None, "verdict": "no scored samples yet", "needed_samples": None}
    lo, hi = paired["ci95"] or (0.0, 0.0)
    months = paired.get("months", 0)
    if p < alpha and (lo > 0 or hi < 0) and months >= MIN_MONTHS:
        winner = "ml" if paired["ml_only"] > paired["rules_only"] else "rules"
        return {"winner": winner, "needed_samples": None,
                "verdict": f"{winner} wins: difference {paired['difference']:+.3f} "
                           f"(95 % interval {paired['ci95'][0]:+.3f}..{paired['ci95'][1]:+.3f}),"
                           f" McNemar p = {p:.2g} < {alpha:g} on {n} paired bars"}
    need = needed_samples(paired["ml_only"] / n, paired["rules_only"] / n, alpha)
    more = "no difference observed, no sample size detects it" if need is None else (
        f"{max(need - n, 0)} more samples needed at this effect size")
    why = (f"McNemar p = {p:.2g} >= {alpha:g}" if p >= alpha else
           f"McNemar p = {p:.2g} but {months} month(s) of bars (need {MIN_MONTHS})"
           if months < MIN_MONTHS else
           f"McNemar p = {p:.2g} but the month-block interval {lo:+.3f}..{hi:+.3f} holds 0")
    return {"winner": None, "needed_samples": need,
            "verdict": f"not yet significant ({why} on {n} paired bars, difference "
                       f"{paired['difference']:+.3f}): {more}"}
