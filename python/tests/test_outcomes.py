"""Outcomes defined by neither arm: what the market did next, and the paired tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quantshift_ml.errors import UsageError
from quantshift_ml.outcomes import (
    OutcomeConfig,
    compare_arms,
    economic_pair,
    economic_returns,
    forward_outcomes,
)
from quantshift_ml.outcomes.stats import BOOTSTRAP, SEED


def _closes(n: int = 700, seed: int = 3) -> pd.Series:
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0003, 0.01, n) * np.where(np.arange(n) % 200 < 40, 3.0, 1.0)
    return pd.Series(100 * np.exp(np.cumsum(r)), index=pd.bdate_range("2010-01-01", periods=n))


def test_forward_outcomes_unknown_until_the_horizon_has_passed() -> None:
    close = _closes()
    full = forward_outcomes(close)
    t = 600
    for cols in (["turbulent", "drawdown_event", "fwd_vol", "fwd_drawdown"],):
        early = forward_outcomes(close.iloc[: t + 20])  # bar t + 19 is the newest
        assert early[cols].iloc[t].isna().all()
        just = forward_outcomes(close.iloc[: t + 21])  # bar t + 20 has settled
        assert just[cols].iloc[t].to_numpy() == pytest.approx(full[cols].iloc[t].to_numpy())
    assert full[["turbulent", "drawdown_event"]].iloc[-20:].isna().all().all()
    assert np.isnan(full["next_return"].iloc[-1])


def test_threshold_reads_only_the_past() -> None:
    close = _closes()
    changed = close.copy()
    changed.iloc[601:] *= np.linspace(1.0, 3.0, len(changed) - 601)
    a, b = forward_outcomes(close), forward_outcomes(changed)
    assert a["vol_threshold"].iloc[:601].equals(b["vol_threshold"].iloc[:601])
    assert not np.allclose(a["fwd_vol"].iloc[590], b["fwd_vol"].iloc[590])


def test_drawdown_is_peak_to_trough_after_the_bar() -> None:
    prices = [100.0] * 5 + [110.0, 101.0, 108.0] + [108.0] * 30
    close = pd.Series(prices, index=pd.bdate_range("2020-01-01", periods=len(prices)))
    f = forward_outcomes(close, OutcomeConfig(horizon=5, vol_lookback=10, vol_window=2))
    # bar 4 sees 110 then 101: a fall of 8.2 % from the peak, not from its own close
    assert f["fwd_drawdown"].iloc[4] == pytest.approx(1 - 101 / 110)
    assert f["drawdown_event"].iloc[4] == 1.0
    assert f["drawdown_event"].iloc[8] == 0.0


def test_economic_next_bar_execution_and_costs() -> None:
    cfg = OutcomeConfig(cost_bp=10.0)
    daily, pos = economic_returns(["Bull", "High Vol", "Crisis", "Crisis"],
                                  np.array([0.01, 0.02, -0.05, 0.03]), cfg)
    assert pos.tolist() == [1.0, 0.5, 0.0, 0.0]
    assert daily == pytest.approx([0.01, 0.5 * 0.02 - 0.0005, -0.0005, 0.0])


def test_bad_exposure_map_is_refused() -> None:
    with pytest.raises(UsageError, match="no position for"):
        OutcomeConfig(exposure={"Bull": 1.0})
    with pytest.raises(UsageError, match=r"-1\.\.1"):
        OutcomeConfig(exposure={"Bull": 2.0, "Bear": 0, "High Vol": 0, "Low Vol": 0,
                                "Crisis": 0})


def _crash_market(months: int = 24) -> tuple[pd.DataFrame, list[str], list[str], list[str]]:
    """Calm days drifting up with three crashes a month; the rule calls Bear on the
    eve of each crash, the model copies a settled state that never leaves Bull."""
    days = pd.bdate_range("2015-01-01", periods=21 * months)
    rng = np.random.default_rng(7)
    ret = rng.normal(0.0008, 0.004, len(days))
    eve = np.zeros(len(days), dtype=bool)
    eve[np.arange(len(days)) % 7 == 3] = True
    ret[eve] = -0.03  # next_return of an eve is the crash
    frame = pd.DataFrame({"turbulent": 0.0, "drawdown_event": 0.0, "next_return": ret},
                         index=days)
    settled = ["Bull"] * len(days)
    ml = list(settled)
    rules = ["Bear" if e else "Bull" for e in eve]
    return frame, ml, rules, settled


def test_rule_that_makes_more_money_wins_economic_and_loses_settled_state() -> None:
    frame, ml, rules, settled = _crash_market()
    rep = compare_arms({"ml": ml, "rules": rules}, frame, settled)
    assert rep["primary"] == "economic"
    assert rep["outcomes"]["economic"]["winner"] == "rules"
    assert rep["winner"] == "rules"
    assert rep["outcomes"]["settled_state"]["winner"] == "ml"
    assert (rep["outcomes"]["economic"]["arms"]["rules"]["sharpe"]
            > rep["outcomes"]["economic"]["arms"]["ml"]["sharpe"])
    on_state = compare_arms({"ml": ml, "rules": rules}, frame, settled,
                            primary="settled_state")
    assert on_state["winner"] == "ml"


def _sharpe(r: np.ndarray) -> float:
    return float(r.mean() / r.std(ddof=1) * np.sqrt(252.0))


def test_sharpe_difference_interval_matches_an_independent_bootstrap() -> None:
    rng = np.random.default_rng(11)
    days = pd.bdate_range("2016-01-01", periods=300)
    a, b = rng.normal(0.0006, 0.01, 300), rng.normal(0.0002, 0.012, 300)
    months = np.asarray(days.strftime("%Y-%m"))
    got = economic_pair(a, b, months, draws=BOOTSTRAP, seed=SEED)
    keys = np.unique(months)
    picks = np.random.default_rng(SEED).integers(0, len(keys), size=(BOOTSTRAP, len(keys)))
    stats = []
    for draw in picks:
        rows = np.concatenate([np.flatnonzero(months == keys[k]) for k in draw])
        stats.append(_sharpe(a[rows]) - _sharpe(b[rows]))
    lo, hi = np.percentile(stats, [2.5, 97.5])
    assert got["ci95"] == pytest.approx([lo, hi], abs=1e-3)
    assert got["difference"] == pytest.approx(_sharpe(a) - _sharpe(b), abs=1e-3)
    assert got["return_difference"] == pytest.approx((a - b).mean() * 252, abs=1e-4)


def test_unknown_primary_is_refused() -> None:
    frame, ml, rules, settled = _crash_market(3)
    with pytest.raises(ValueError, match="primary outcome"):
        compare_arms({"ml": ml, "rules": rules}, frame, settled, primary="accuracy")
