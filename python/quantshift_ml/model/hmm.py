"""Two-state Gaussian HMM of daily log returns: the volatility regime in hindsight.

The HMM sees one number per day, the log return of the close in percent, and
explains the history as a hidden Markov chain of two states with their own
mean and variance. States are ordered by variance, so state 0 is *calm* (about
11 % annualised volatility on the S&P 500 1999-2018) and state 1 *turbulent*
(about 29 %).

Two readings of the same fitted model, and why both exist:

``smoothed`` (forward-backward) uses returns before *and after* day t: it is the
hindsight label a training run learns from. It is only trusted for days at
least ``SETTLE_BARS`` old, whose state no longer moves much when later data
arrive.

``filtered`` (the forward pass alone) uses returns up to day t: it is causal, a
fair baseline the forest must beat, and what an operator could compute live
without any machine learning.

``range_filtered`` is the same forward pass fed each day's high-low range as
well as its return (each state's range law estimated on known days): a
stronger classic baseline, not a label.

Fitting uses ``hmmlearn`` (EM from several variance-based starts, best likelihood
kept); the forward
filter is a few lines of numpy so that it runs from the parameters alone.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml.errors import DataError

SETTLE_BARS = 20
"""A smoothed state is used as a label once it is this many bars old."""
MIN_HMM_BARS = 250
"""Fewer returns than this (one trading year) do not identify two volatility states."""
SEEDS: tuple[int, ...] = (0, 1, 2)
"""EM restarts of a cold fit; a warm fit adds the previous parameters as one more start."""

logging.getLogger("hmmlearn").setLevel(logging.ERROR)  # "not converging" notes on stderr


@dataclass(frozen=True)
class HmmParams:
    """A fitted 2-state HMM, calm state first; JSON-native via ``to_dict``.

    ``means`` and ``variances`` are of daily log returns in percent.
    """

    startprob: tuple[float, float]
    transmat: tuple[tuple[float, float], tuple[float, float]]
    means: tuple[float, float]
    variances: tuple[float, float]
    log_likelihood: float
    n_obs: int

    def annual_vol(self) -> tuple[float, float]:
        """Annualised volatility of each state (fraction, not percent)."""
        v = np.sqrt(np.asarray(self.variances) * 252.0) / 100.0
        return float(v[0]), float(v[1])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["annual_vol"] = [round(v, 4) for v in self.annual_vol()]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HmmParams:
        return cls(startprob=tuple(d["startprob"]),  # type: ignore[arg-type]
                   transmat=tuple(tuple(r) for r in d["transmat"]),  # type: ignore[arg-type]
                   means=tuple(d["means"]), variances=tuple(d["variances"]),  # type: ignore[arg-type]
                   log_likelihood=float(d["log_likelihood"]), n_obs=int(d["n_obs"]))


def returns_pct(close: pd.Series | np.ndarray) -> np.ndarray:
    """Daily log returns in percent, one per bar (the first bar's return is 0)."""
    c = np.asarray(close, dtype=float)
    r = np.zeros(len(c))
    r[1:] = np.diff(np.log(c)) * 100.0
    return r


def _to_params(model: Any, n: int, score: float) -> HmmParams:
    var = np.asarray(model.covars_, dtype=float).reshape(2)
    order = np.argsort(var)  # calm first
    trans = np.asarray(model.transmat_, dtype=float)[np.ix_(order, order)]
    return HmmParams(
        startprob=tuple(float(v) for v in np.asarray(model.startprob_)[order]),  # type: ignore[arg-type]
        transmat=tuple(tuple(float(v) for v in row) for row in trans),  # type: ignore[arg-type]
        means=tuple(float(v) for v in np.asarray(model.means_).reshape(2)[order]),  # type: ignore[arg-type]
        variances=tuple(float(v) for v in var[order]),  # type: ignore[arg-type]
        log_likelihood=round(float(score), 4), n_obs=n)


def _initial(returns: np.ndarray, seed: int) -> HmmParams:
    """A start for EM from the data's own variance: one state below it, one above.

    Why not hmmlearn's default start: it places the means by k-means, which on
    one-dimensional returns splits up days from down days (not calm from
    turbulent) and cost 80 % of the walk-forward's HMM time (10 k-means runs per
    start). Seed 0 is the plain start; other seeds jitter the two variances.
    """
    x = np.asarray(returns, dtype=float).ravel()
    var, mu = float(np.var(x)), float(np.mean(x))
    jitter = np.exp(np.random.default_rng(seed).normal(0.0, 0.3, 2)) if seed else np.ones(2)
    low, high = (var * np.array([0.4, 2.5]) * jitter).tolist()
    return HmmParams(startprob=(0.5, 0.5), transmat=((0.98, 0.02), (0.04, 0.96)),
                     means=(mu, mu), variances=(low, high), log_likelihood=0.0, n_obs=len(x))


def _model(params: HmmParams, seed: int) -> Any:
    """A GaussianHMM that starts EM from ``params`` (no random or k-means start)."""
    from hmmlearn.hmm import GaussianHMM

    # "scaling": the same fixed point as the log-space recursion, twice as fast here
    m = GaussianHMM(n_components=2, covariance_type="diag", n_iter=200, tol=1e-4,
                    random_state=seed, implementation="scaling", init_params="")
    m.startprob_ = np.asarray(params.startprob)
    m.transmat_ = np.asarray(params.transmat)
    m.means_ = np.asarray(params.means).reshape(2, 1)
    m.covars_ = np.asarray(params.variances).reshape(2, 1)
    return m


def fit(returns: np.ndarray, *, warm: HmmParams | None = None,
        seeds: tuple[int, ...] = SEEDS) -> HmmParams:
    """Fit the HMM by EM and keep the start with the best log-likelihood.

    A warm fit (``warm`` given, as in the monthly walk-forward) starts once from
    the previous month's parameters and once from the first seed: a month of new
    data rarely moves the optimum, so this costs two EM runs instead of three;
    the fresh start keeps the fit from drifting along with its own history
    (measured: warm-only starts changed the labels enough to move every
    baseline's walk-forward score).
    """
    x = np.asarray(returns, dtype=float).reshape(-1, 1)
    if len(x) < MIN_HMM_BARS:
        raise DataError(f"the regime HMM needs at least {MIN_HMM_BARS} daily returns, "
                        f"got {len(x)}")
    starts = [(_initial(x, s), s) for s in seeds]
    if warm is not None:
        starts = [(warm, seeds[0]), starts[0]]
    best: tuple[float, Any] | None = None
    for init, seed in starts:
        m = _model(init, seed)
        m.fit(x)
        score = float(m.score(x))
        if best is None or score > best[0]:
            best = (score, m)
    assert best is not None
    return _to_params(best[1], len(x), best[0])


def _emissions(params: HmmParams, returns: np.ndarray) -> np.ndarray:
    mu = np.asarray(params.means)
    var = np.asarray(params.variances)
    r = np.asarray(returns, dtype=float)[:, None]
    return np.exp(-0.5 * (r - mu) ** 2 / var) / np.sqrt(2.0 * np.pi * var)


def filtered(params: HmmParams, returns: np.ndarray) -> np.ndarray:
    """P(turbulent | returns up to t) for every t: the causal forward pass."""
    return _forward(params, _emissions(params, returns))


def _forward(params: HmmParams, emissions: np.ndarray) -> np.ndarray:
    """The forward pass over per-day state densities (``emissions``, shape (n, 2)).

    Scalar Python on purpose: two states make the recursion a handful of float
    operations per day, several times faster than numpy on arrays of two.
    """
    e0, e1 = (col.tolist() for col in np.asarray(emissions).T)
    (p00, p01), (p10, p11) = params.transmat
    a0, a1 = params.startprob
    out = np.empty(len(e0))
    for t in range(len(e0)):
        if t:
            a0, a1 = a0 * p00 + a1 * p10, a0 * p01 + a1 * p11
        a0, a1 = a0 * e0[t], a1 * e1[t]
        total = a0 + a1
        if total > 0.0:
            a0, a1 = a0 / total, a1 / total
        else:  # both densities underflowed: no information today
            a0, a1 = 0.5, 0.5
        out[t] = a1
    return out


def log_range(bars: pd.DataFrame) -> np.ndarray:
    """log(ln(High / Low)) per bar: the day's range on a scale where it is near Gaussian
    within a volatility state (NaN where the range is not positive or missing)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lr = np.log(bars["High"].to_numpy(dtype=float) / bars["Low"].to_numpy(dtype=float))
        ok = np.isfinite(lr) & (lr > 0.0)
        return np.where(ok, np.log(np.where(ok, lr, 1.0)), np.nan)


@dataclass(frozen=True)
class RangeLaw:
    """Mean and variance of ``log_range`` in each state (calm first)."""

    means: tuple[float, float]
    variances: tuple[float, float]


MIN_RANGE_DAYS = 60
"""Fewer days with a range than this: the ranges are not used (an uninformative law)."""
UNINFORMATIVE = RangeLaw(means=(0.0, 0.0), variances=(1.0, 1.0))


def range_law(params: HmmParams, returns: np.ndarray, ranges: np.ndarray) -> RangeLaw:
    """Each state's ``log_range`` law, weighted by the smoothed state of every day given.

    Only the days passed in are read (a training run passes those up to its last
    training row), so the law is known at the time, like the HMM itself.
    """
    ok = np.isfinite(ranges)
    if int(ok.sum()) < MIN_RANGE_DAYS:  # e.g. a CSV whose High and Low equal its Close
        return UNINFORMATIVE
    post = smoothed(params, returns)
    x, w1 = np.asarray(ranges)[ok], post[ok]
    means, variances = [], []
    for w in (1.0 - w1, w1):
        m = float(np.sum(w * x) / max(np.sum(w), 1e-12))
        means.append(m)
        variances.append(max(float(np.sum(w * (x - m) ** 2) / max(np.sum(w), 1e-12)), 1e-6))
    return RangeLaw(means=(means[0], means[1]), variances=(variances[0], variances[1]))


def range_filtered(params: HmmParams, law: RangeLaw, returns: np.ndarray,
                   ranges: np.ndarray) -> np.ndarray:
    """P(turbulent | returns and daily ranges up to t): the forward pass with each day's
    return density times its range density (a day without a range: return alone).

    Why: the high-low range measures a day's volatility several times more
    efficiently than the close-to-close return (Parkinson 1980), so this causal
    filter is a stronger classic counterpart than ``filtered``; it is a baseline,
    never a model input.
    """
    mu, var = np.asarray(law.means), np.asarray(law.variances)
    x = np.asarray(ranges, dtype=float)[:, None]
    log_dens = -0.5 * (x - mu) ** 2 / var - 0.5 * np.log(2.0 * np.pi * var)
    # scaled so the likelier state's factor is 1 (the ratio is all the filter
    # reads): an extreme range never underflows both states to 0
    dens = np.exp(log_dens - log_dens.max(axis=1, keepdims=True))
    dens = np.where(np.isfinite(dens), dens, 1.0)
    return _forward(params, _emissions(params, returns) * dens)


def settled(params: HmmParams, returns: np.ndarray, lag: int,
            known: np.ndarray | None = None) -> np.ndarray:
    """P(turbulent at t | returns up to t + lag) for every t: the label as known ``lag``
    bars later (NaN where t + lag is past the data).

    The fair persistence baseline reads it: the state of a day once it is
    settled, smoothed with the data known then, not with the whole history.
    Two states, so the backward pass over ``lag`` bars is vectorised over days.
    ``known``: ``filtered(params, returns)`` when the caller has it already.
    """
    r = np.asarray(returns, dtype=float)
    n = len(r)
    alpha = filtered(params, r) if known is None else np.asarray(known, dtype=float)
    e = _emissions(params, r)
    trans = np.asarray(params.transmat)
    t = np.arange(n)
    beta = np.ones((n, 2))
    for k in range(lag, 0, -1):  # from day t + lag back to day t
        nxt = np.clip(t + k, 0, n - 1)
        beta = (e[nxt] * beta) @ trans.T
        total = beta.sum(axis=1, keepdims=True)
        # both densities underflowed: no information from that day, as in ``filtered``
        beta = np.where(total > 0.0, beta / np.where(total > 0.0, total, 1.0), 0.5)
    post = np.c_[1.0 - alpha, alpha] * beta
    out = post[:, 1] / post.sum(axis=1)
    out[t + lag >= n] = np.nan
    return out


def smoothed(params: HmmParams, returns: np.ndarray) -> np.ndarray:
    """P(turbulent | all returns) for every t: forward-backward (hindsight)."""
    m = _model(params, SEEDS[0])
    return np.asarray(m.predict_proba(np.asarray(returns, dtype=float).reshape(-1, 1)))[:, 1]
