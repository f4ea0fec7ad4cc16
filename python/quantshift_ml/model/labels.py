"""Labelers: what "the regime" of a day means.

Three labelers, chosen with ``--labeler``:

``hmm`` (default, horizon 20) is a hindsight nowcast: the volatility state of a
two-state Gaussian HMM of daily returns (``quantshift_ml.model.hmm``), smoothed
forward-backward and fitted only on the bars available at training time,
composed with a causal trend rule into the five regime names
(``quantshift_ml.model.regimes``). The forest learns the volatility state, which no
causal feature contains; the trend part is ruled. A smoothed state is used as a
label once it is ``horizon`` bars old; the newest ``horizon`` rows are NaN.

``rules`` (horizon 0) is the old runbook's same-day rule, kept for continuity:
    ATR ratio > 2.0 -> Crisis; > 1.5 -> High Vol; SMA-50 slope > 0.005 with ATR
    ratio < 1.2 -> Bull; SMA-50 slope < -0.005 -> Bear; else Low Vol.
    It is a deterministic function of two of the model's own inputs, so a model
    learns it almost perfectly: high accuracy here measures "the model reproduces
    the rule", not foresight. The baseline "rule applied directly" makes that visible.

``forward`` (horizon H=20 by default) labels day t with what happens over the next
H bars, information the features do not contain:
    annualised realised volatility of daily log returns > 35 % or max drawdown
    from close(t) < -10 % -> Crisis; volatility > 22 % -> High Vol; return
    close(t+H)/close(t)-1 > +2 % -> Bull; < -2 % -> Bear; else Low Vol.
    The last H rows cannot be labeled yet and are NaN.

All thresholds are parameters with these documented defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml import defaults
from quantshift_ml.errors import UsageError
from quantshift_ml.model import hmm
from quantshift_ml.model.features import HMM_FILTER
from quantshift_ml.model.regimes import CALM, TURBULENT, RegimeRule


@dataclass(frozen=True)
class RulesLabeler:
    """The old same-day rule (see module docstring)."""

    crisis_atr: float = 2.0
    high_vol_atr: float = 1.5
    trend_slope: float = 0.005
    bull_max_atr: float = 1.2
    name: str = "rules"
    horizon: int = 0

    def label(self, bars: pd.DataFrame, features: pd.DataFrame, fitted: Any = None
              ) -> pd.Series:
        """Labels aligned with ``features``; NaN where features are undefined."""
        atr = features["atr_ratio"]
        slope = features["sma50_slope"]
        return pd.Series(self._apply(atr.to_numpy(), slope.to_numpy()), index=features.index)

    def fit(self, bars: pd.DataFrame, warm: Any = None) -> None:
        """Nothing to fit: the rule is fixed."""
        return None

    def target(self, bars: pd.DataFrame, features: pd.DataFrame, fitted: Any = None
               ) -> pd.Series:
        """What the estimator learns: the regimes themselves."""
        return self.label(bars, features)

    rule = None

    def predict_from_features(self, features: pd.DataFrame) -> np.ndarray:
        """The rule applied directly to feature rows: the "rule" baseline."""
        return self._apply(features["atr_ratio"].to_numpy(), features["sma50_slope"].to_numpy())

    def _apply(self, atr: np.ndarray, slope: np.ndarray) -> np.ndarray:
        out = np.full(atr.shape, "Low Vol", dtype=object)
        out[(slope < -self.trend_slope)] = "Bear"
        out[(slope > self.trend_slope) & (atr < self.bull_max_atr)] = "Bull"
        out[atr > self.high_vol_atr] = "High Vol"
        out[atr > self.crisis_atr] = "Crisis"
        out[np.isnan(atr) | np.isnan(slope)] = np.nan
        return out

    def params(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ForwardLabeler:
    """Regime of the next ``horizon`` bars (see module docstring)."""

    horizon: int = 20
    crisis_vol: float = 0.35
    crisis_drawdown: float = -0.10
    high_vol: float = 0.22
    trend_return: float = 0.02
    name: str = "forward"
    rule = None

    def fit(self, bars: pd.DataFrame, warm: Any = None) -> None:
        """Nothing to fit: the thresholds are fixed."""
        return None

    def target(self, bars: pd.DataFrame, features: pd.DataFrame, fitted: Any = None
               ) -> pd.Series:
        """What the estimator learns: the regimes themselves."""
        return self.label(bars, features)

    def label(self, bars: pd.DataFrame, features: pd.DataFrame, fitted: Any = None
              ) -> pd.Series:
        close = bars["Close"].to_numpy(dtype=float)
        n, h = len(close), self.horizon
        log_ret = np.diff(np.log(close), prepend=np.nan)
        out = np.full(n, np.nan, dtype=object)
        if n > h:
            # windows[t] = returns t+1..t+H and closes t+1..t+H (vectorised)
            idx = np.arange(n - h)[:, None] + np.arange(1, h + 1)[None, :]
            rets = log_ret[idx]
            vol = rets.std(axis=1, ddof=1) * np.sqrt(252.0)
            fwd_close = close[idx]
            drawdown = fwd_close.min(axis=1) / close[: n - h] - 1.0
            ret = close[h:] / close[: n - h] - 1.0
            lab = np.full(n - h, "Low Vol", dtype=object)
            lab[ret < -self.trend_return] = "Bear"
            lab[ret > self.trend_return] = "Bull"
            lab[vol > self.high_vol] = "High Vol"
            lab[(vol > self.crisis_vol) | (drawdown < self.crisis_drawdown)] = "Crisis"
            out[: n - h] = lab
        series = pd.Series(out, index=bars.index).reindex(features.index)
        return series

    def params(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HmmLabeler:
    """Hindsight volatility state of the regime HMM, composed with a ruled trend.

    ``threshold``: smoothed P(turbulent) above which a day is turbulent.
    ``crisis_drawdown`` and ``trend_slope``: the ruled axis (``RegimeRule``).
    """

    horizon: int = hmm.SETTLE_BARS
    threshold: float = 0.5
    crisis_drawdown: float = -0.20
    trend_slope: float = 0.0
    name: str = "hmm"

    @property
    def rule(self) -> RegimeRule:
        return RegimeRule(crisis_drawdown=self.crisis_drawdown, trend_slope=self.trend_slope)

    def fit(self, bars: pd.DataFrame, warm: hmm.HmmParams | None = None) -> hmm.HmmParams:
        """Fit the HMM on every bar given (the caller truncates to what is known)."""
        return hmm.fit(hmm.returns_pct(bars["Close"])[1:], warm=warm)

    def target(self, bars: pd.DataFrame, features: pd.DataFrame,
               fitted: hmm.HmmParams | None = None) -> pd.Series:
        """calm / turbulent per bar; NaN for the newest ``horizon`` bars (not settled)."""
        params = fitted if fitted is not None else self.fit(bars)
        p = np.full(len(bars), np.nan)
        p[1:] = hmm.smoothed(params, hmm.returns_pct(bars["Close"])[1:])
        out = self._states(p)
        if self.horizon:
            out[-self.horizon:] = np.nan
        return pd.Series(out, index=bars.index).reindex(features.index)

    def settled(self, bars: pd.DataFrame, fitted: hmm.HmmParams,
                filtered: np.ndarray | None = None) -> np.ndarray:
        """P(turbulent) of each bar as known ``horizon`` bars later (``hmm.settled``);
        ``filtered``: the forward pass over ``bars`` with ``fitted``, if already known."""
        p = np.full(len(bars), np.nan)
        p[1:] = hmm.settled(fitted, hmm.returns_pct(bars["Close"])[1:], self.horizon,
                            None if filtered is None else np.asarray(filtered)[1:])
        return p

    def known_target(self, bars: pd.DataFrame, features: pd.DataFrame,
                     fitted: hmm.HmmParams) -> pd.Series:
        """``target`` as it was known ``horizon`` bars after each day, with the HMM
        ``fitted`` then (what the fair persistence baseline reads), not the final one.

        The forward pass is read from ``features``' ``hmm_filter`` when it is there
        for every bar (``relabel`` computes it with ``fitted``) instead of run again.
        """
        filt = None
        if HMM_FILTER in features.columns and features.index.equals(bars.index):
            filt = features[HMM_FILTER].to_numpy(dtype=float)
        return pd.Series(self._states(self.settled(bars, fitted, filt)),
                         index=bars.index).reindex(features.index)

    def _states(self, p: np.ndarray) -> np.ndarray:
        """calm / turbulent of P(turbulent) ``p``; NaN where ``p`` is."""
        out = np.where(p > self.threshold, TURBULENT, CALM).astype(object)
        out[np.isnan(p)] = np.nan
        return out

    def label(self, bars: pd.DataFrame, features: pd.DataFrame,
              fitted: hmm.HmmParams | None = None) -> pd.Series:
        """The five regimes: ``target`` composed with the rule; NaN where either is."""
        state = self.target(bars, features, fitted)
        known = state.notna().to_numpy() & features.notna().all(axis=1).to_numpy()
        out = np.full(len(state), np.nan, dtype=object)
        out[known] = self.rule.compose_frame(state.to_numpy()[known] == TURBULENT,
                                             features[known])
        return pd.Series(out, index=features.index)

    def params(self) -> dict[str, Any]:
        return asdict(self)


Labeler = RulesLabeler | ForwardLabeler | HmmLabeler

LABELERS: dict[str, Callable[[], Labeler]] = {
    "hmm": HmmLabeler, "rules": RulesLabeler, "forward": ForwardLabeler}
DEFAULT_LABELER = defaults.LABELER


def make_labeler(name: str, **params: Any) -> Labeler:
    """Build a labeler by name; unknown names are a usage error listing the choices."""
    try:
        factory = LABELERS[name]
    except KeyError:
        raise UsageError(f"unknown labeler {name!r}: choose {', '.join(LABELERS)}") from None
    labeler = factory()
    if params:
        labeler = type(labeler)(**{**labeler.params(), **params})
    return labeler
