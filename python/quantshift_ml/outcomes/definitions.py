"""Outcome definitions: each known only after the fact and defined by neither arm.

A regime call is judged here on what the market did next, not on the labeler the
model was trained to copy (that is ``settled_state``, kept and labelled "the
model's own target"). Every forward outcome of bar ``t`` uses closes after
``t`` only, and is unknown (NaN) until its ``horizon`` bars have passed, so a
bar near the end of the data is never scored early.

``forward_vol``
    The annualised realised volatility of the next ``horizon`` daily log returns,
    called turbulent when it exceeds the ``vol_quantile`` quantile of the
    20-day realised volatility over the ``vol_lookback`` bars up to ``t`` (known
    at prediction time). The 0.75 quantile of the trailing two years: the
    two-year window is the model's own training window, and a quarter of the
    bars being turbulent relative to the recent past is about the turbulent
    share of the HMM's settled state on the bundled S&P 500 (docs/model.md), so
    neither arm is favoured by a threshold far from what it was built to call.
    Bull and Low Vol call calm; Bear, High Vol and Crisis call turbulent.
``forward_drawdown``
    Whether the next ``horizon`` bars hold a peak-to-trough fall (from the close
    of ``t`` on) deeper than ``drawdown_depth`` (7 %): the event a Bear or
    Crisis call exists to warn of. On the bundled S&P 500 (1999-2018) a 5 % fall
    follows 28 % of the bars (an ordinary month), a 10 % fall 6 %; 7 % (14 %)
    is a fall a bot would want to have been flat for, common enough to score.
    Scored as the hit rate (warnings among the events) and the false-alarm rate
    (warnings among the bars with no event).
``economic``
    The bot's money: the position of the called regime (``exposure``, default
    long in Bull and Low Vol, half in High Vol, flat in Bear and Crisis) is
    taken at ``t``'s close and earns ``t+1``'s close-to-close return (next-bar
    execution); each change of exposure costs ``cost_bp`` basis points per unit
    changed. Cash earns 0.
``settled_state``
    The model's own target (the settled ``hmm`` state as five regimes), passed in
    by the caller: today's yardstick, kept for continuity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from quantshift_ml import REGIMES
from quantshift_ml.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

OUTCOMES: tuple[str, ...] = ("forward_vol", "forward_drawdown", "economic", "settled_state")
"""Every outcome, in report order; ``economic`` is the default primary one."""
CALM: tuple[str, ...] = ("Bull", "Low Vol")
TURBULENT: tuple[str, ...] = ("Bear", "High Vol", "Crisis")
WARNING_REGIMES: tuple[str, ...] = ("Bear", "Crisis")
"""The calls that warn of a drawdown (``forward_drawdown``)."""
DEFAULT_EXPOSURE: dict[str, float] = {"Bull": 1.0, "Low Vol": 1.0, "High Vol": 0.5,
                                      "Bear": 0.0, "Crisis": 0.0}
TRADING_DAYS = 252.0
Calls = Sequence[Any] | np.ndarray
"""Regimes (or settled labels) per bar: a list or an object array."""


@dataclass(frozen=True)
class OutcomeConfig:
    """The outcomes' parameters (fleet variables ``quantshift_outcome_*``)."""

    horizon: int = 20
    vol_window: int = 20
    vol_lookback: int = 504
    vol_quantile: float = 0.75
    drawdown_depth: float = 0.07
    cost_bp: float = 5.0
    exposure: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_EXPOSURE))

    def __post_init__(self) -> None:
        missing = [r for r in REGIMES if r not in self.exposure]
        if missing:
            raise UsageError(f"the exposure map has no position for {', '.join(missing)}: "
                             f"give one per regime ({', '.join(REGIMES)})")
        bad = {r: v for r, v in self.exposure.items() if not -1.0 <= float(v) <= 1.0}
        if bad:
            raise UsageError(f"exposures must lie in -1..1, got {bad}")
        if not 0.0 < self.vol_quantile < 1.0 or not 0.0 < self.drawdown_depth < 1.0:
            raise UsageError("vol_quantile and drawdown_depth must lie strictly in 0..1")
        if self.horizon < 1 or self.vol_window < 2 or self.vol_lookback < self.vol_window:
            raise UsageError("horizon >= 1, vol_window >= 2 and vol_lookback >= vol_window")

    def as_dict(self) -> dict[str, Any]:
        return {"horizon": self.horizon, "vol_window": self.vol_window,
                "vol_lookback": self.vol_lookback, "vol_quantile": self.vol_quantile,
                "drawdown_depth": self.drawdown_depth, "cost_bp": self.cost_bp,
                "exposure": {r: float(self.exposure[r]) for r in REGIMES}}


def _forward_window(values: np.ndarray, horizon: int) -> np.ndarray:
    """Rows ``t`` holding ``values[t+1 .. t+horizon]`` (NaN rows where not yet known)."""
    n = len(values)
    out = np.full((n, horizon), np.nan)
    if n > horizon:
        view = np.lib.stride_tricks.sliding_window_view(values[1:], horizon)
        out[: len(view)] = view
    return out


def forward_outcomes(close: pd.Series, config: OutcomeConfig | None = None) -> pd.DataFrame:
    """Per bar: forward volatility and its threshold, the drawdown event, next return.

    Columns: ``fwd_vol``, ``vol_threshold``, ``turbulent`` (1.0/0.0, NaN while
    unknown), ``fwd_drawdown`` (the deepest fall as a positive share),
    ``drawdown_event`` (1.0/0.0/NaN) and ``next_return`` (NaN on the last bar).
    """
    import pandas as pd  # imported on use: the service starts without pandas

    cfg = config or OutcomeConfig()
    c = pd.Series(close, dtype=float)
    logret = np.append(np.nan, np.diff(np.log(c.to_numpy())))
    fwd = _forward_window(logret, cfg.horizon)
    fwd_vol = np.std(fwd, axis=1, ddof=1) * np.sqrt(TRADING_DAYS)
    past_vol = pd.Series(logret, index=c.index).rolling(cfg.vol_window).std() * np.sqrt(
        TRADING_DAYS)
    threshold = past_vol.rolling(cfg.vol_lookback, min_periods=cfg.vol_lookback // 2).quantile(
        cfg.vol_quantile).to_numpy()
    known = ~np.isnan(fwd_vol) & ~np.isnan(threshold)
    turbulent = np.where(known, (fwd_vol > threshold).astype(float), np.nan)
    path = _forward_window(c.to_numpy(), cfg.horizon)
    peak = np.maximum.accumulate(np.column_stack([c.to_numpy(), path]), axis=1)
    fall = 1.0 - np.column_stack([c.to_numpy(), path]) / peak
    depth = np.where(np.isnan(path[:, -1]), np.nan, np.nanmax(fall, axis=1))
    event = np.where(np.isnan(depth), np.nan, (depth > cfg.drawdown_depth).astype(float))
    next_ret = np.append(c.to_numpy()[1:] / c.to_numpy()[:-1] - 1.0, np.nan)
    return pd.DataFrame({"fwd_vol": fwd_vol, "vol_threshold": threshold,
                         "turbulent": turbulent, "fwd_drawdown": depth,
                         "drawdown_event": event, "next_return": next_ret}, index=c.index)


def economic_returns(regimes: Calls, next_returns: np.ndarray,
                     config: OutcomeConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(daily strategy returns, exposure per bar) of the regime-conditioned position.

    Bar ``i`` earns ``exposure[i] * next_returns[i]`` less the cost of moving from
    the previous bar's exposure (the first bar starts in its own position).
    """
    cfg = config or OutcomeConfig()
    pos = np.asarray([float(cfg.exposure[str(r)]) for r in regimes], dtype=float)
    change = np.abs(np.diff(pos, prepend=pos[:1])) if len(pos) else pos
    return pos * np.asarray(next_returns, dtype=float) - change * cfg.cost_bp / 1e4, pos


def money(daily: np.ndarray, exposure: np.ndarray) -> dict[str, Any]:
    """Annual return, volatility, Sharpe (risk-free 0), max drawdown and turnover."""
    r = np.asarray(daily, dtype=float)
    if len(r) < 2:
        return {"samples": len(r), "annual_return": None, "volatility": None,
                "sharpe": None, "max_drawdown": None, "turnover": None}
    sd = float(r.std(ddof=1))
    equity = np.cumprod(1.0 + r)
    years = len(r) / TRADING_DAYS
    turns = float(np.abs(np.diff(exposure)).sum())
    return {"samples": len(r),
            "annual_return": round(float(equity[-1] ** (1.0 / years) - 1.0), 4),
            "volatility": round(sd * float(np.sqrt(TRADING_DAYS)), 4),
            "sharpe": round(float(r.mean() / sd * np.sqrt(TRADING_DAYS)) if sd else 0.0, 3),
            "max_drawdown": round(float((equity / np.maximum.accumulate(equity) - 1.0).min()),
                                  4),
            "turnover": round(turns / years, 2)}


def _binary(called: np.ndarray, event: np.ndarray) -> dict[str, Any]:
    """Accuracy, balanced accuracy, hit rate and false-alarm rate of a yes/no call."""
    pos, neg = event, ~event
    hit = float(called[pos].mean()) if pos.any() else None
    fa = float(called[neg].mean()) if neg.any() else None
    bal = None if hit is None or fa is None else (hit + 1.0 - fa) / 2.0
    return {"samples": len(event), "events": int(pos.sum()),
            "accuracy": round(float((called == event).mean()), 4) if len(event) else None,
            "balanced_accuracy": None if bal is None else round(bal, 4),
            "hit_rate": None if hit is None else round(hit, 4),
            "false_alarm_rate": None if fa is None else round(fa, 4)}


def correct(outcome: str, regimes: np.ndarray, frame: pd.DataFrame,
            settled: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(right per bar, known mask) of an accuracy-like outcome."""
    r = np.asarray([str(x) for x in regimes], dtype=object)
    if outcome == "forward_vol":
        truth = frame["turbulent"].to_numpy()
        known = ~np.isnan(truth)
        return np.isin(r, TURBULENT) == (truth == 1.0), known
    if outcome == "forward_drawdown":
        truth = frame["drawdown_event"].to_numpy()
        known = ~np.isnan(truth)
        return np.isin(r, WARNING_REGIMES) == (truth == 1.0), known
    if outcome == "settled_state":
        if settled is None:
            return np.zeros(len(r), dtype=bool), np.zeros(len(r), dtype=bool)
        s = np.asarray(settled, dtype=object)
        known = np.asarray([isinstance(x, str) for x in s])
        return r == s, known
    raise ValueError(f"{outcome} is not an accuracy-like outcome")


def score_arm(regimes: Calls, frame: pd.DataFrame, settled: Calls | None = None,
              config: OutcomeConfig | None = None) -> dict[str, Any]:
    """One arm's figures on every outcome, each on the bars where it is known."""
    r = np.asarray([str(x) for x in regimes], dtype=object)
    out: dict[str, Any] = {}
    for name, column, calls in (("forward_vol", "turbulent", TURBULENT),
                                ("forward_drawdown", "drawdown_event", WARNING_REGIMES)):
        truth = frame[column].to_numpy()
        known = ~np.isnan(truth)
        out[name] = _binary(np.isin(r[known], calls), truth[known] == 1.0)
    ret = frame["next_return"].to_numpy()
    known = ~np.isnan(ret)
    daily, pos = economic_returns(r[known], ret[known], config)
    out["economic"] = money(daily, pos)
    s = None if settled is None else np.asarray(settled, dtype=object)
    ok = np.zeros(len(r), dtype=bool) if s is None else np.asarray(
        [isinstance(x, str) for x in s])
    out["settled_state"] = {"samples": int(ok.sum()), "label": "the model's own target",
                            **_five_class(s[ok] if s is not None else s, r[ok])}
    return out


def _five_class(truth: np.ndarray | None, called: np.ndarray) -> dict[str, Any]:
    """Accuracy and balanced accuracy (mean recall over the regimes in the truth)."""
    if truth is None or not len(truth):
        return {"accuracy": None, "balanced_accuracy": None}
    recalls = [float((called[truth == c] == c).mean()) for c in REGIMES if (truth == c).any()]
    return {"accuracy": round(float((truth == called).mean()), 4),
            "balanced_accuracy": round(float(np.mean(recalls)), 4)}
