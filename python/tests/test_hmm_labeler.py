"""The hmm labeler: ordered states, causal filter, settled labels, the ruled composition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quantshift_ml import hmm
from quantshift_ml.errors import DataError
from quantshift_ml.features import compute_features
from quantshift_ml.labels import HmmLabeler, make_labeler
from quantshift_ml.regimes import RegimeModel, RegimeRule
from quantshift_ml.training.pipeline import prepare_dataset, relabel


@pytest.fixture(scope="module")
def fitted(bars: pd.DataFrame) -> hmm.HmmParams:
    return HmmLabeler().fit(bars)


def test_states_are_ordered_calm_then_turbulent(fitted: hmm.HmmParams) -> None:
    calm, turbulent = fitted.annual_vol()
    assert 0.08 < calm < 0.14 and 0.22 < turbulent < 0.36  # docs/model.md: ~11 % and ~29 %
    assert fitted.transmat[0][0] > 0.95 and fitted.transmat[1][1] > 0.9  # regimes persist
    assert hmm.HmmParams.from_dict(fitted.to_dict()) == fitted  # metadata round trip


def test_filter_is_causal_and_smoothing_is_not(bars: pd.DataFrame,
                                               fitted: hmm.HmmParams) -> None:
    r = hmm.returns_pct(bars["Close"])[1:]
    full = hmm.filtered(fitted, r)
    part = hmm.filtered(fitted, r[:2400])
    np.testing.assert_allclose(part, full[:2400])  # later returns never change day t
    sm_full, sm_part = hmm.smoothed(fitted, r), hmm.smoothed(fitted, r[:2400])
    assert np.abs(sm_full[:2400] - sm_part).max() > 0.1  # hindsight: it does change


def test_labels_known_cases_and_last_horizon_unsettled(bars: pd.DataFrame) -> None:
    lab = HmmLabeler()
    feats = compute_features(bars)
    labels = lab.label(bars, feats)
    assert labels.iloc[-lab.horizon:].isna().all() and labels.iloc[-lab.horizon - 1:
                                                                   -lab.horizon].notna().all()
    assert labels.loc["2008-10-10"] == "Crisis"  # turbulent, 20 %+ below the one-year high
    assert labels.loc["2017-06-30"] == "Bull"  # the calmest year on record, rising
    target = lab.target(bars, feats)
    assert set(target.dropna()) == {"calm", "turbulent"}
    assert 0.2 < (target == "turbulent").mean() < 0.5


def test_training_labels_use_only_bars_up_to_the_cutoff(bars: pd.DataFrame) -> None:
    """A training run at the cut-off must not see later bars: changing them changes nothing."""
    ds = prepare_dataset(bars, make_labeler("hmm"))
    cut = 2500
    a = relabel(ds, cut)
    shocked = bars.copy()
    shocked.iloc[cut + 1:, :4] *= np.linspace(1.0, 0.3, len(bars) - cut - 1)[:, None]
    b = relabel(prepare_dataset(shocked, make_labeler("hmm")), cut)
    pd.testing.assert_series_equal(a.target, b.target)
    assert a.target.iloc[cut - HmmLabeler().horizon + 1:].isna().all()  # not settled yet


def test_too_few_returns_is_a_data_error(bars: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="at least 250"):
        HmmLabeler().fit(bars.iloc[:100])


def test_rule_composes_the_five_regimes() -> None:
    rule = RegimeRule()
    turbulent = np.array([True, True, True, False, False, False])
    drawdown = np.array([-0.25, -0.05, -0.12, -0.01, -0.01, -0.3])
    slope = np.array([0.0, 0.0, -0.001, 0.002, -0.002, 0.001])
    vs200 = np.array([-0.1, 0.1, -0.03, 0.05, -0.05, -0.1])
    got = list(rule.compose(turbulent, drawdown, slope, vs200))
    assert got == ["Crisis", "High Vol", "Bear", "Bull", "Low Vol", "Low Vol"]
    assert list(rule.states(np.array(got))) == ["turbulent"] * 3 + ["calm"] * 3
    # the old rule's Bear is a trend, not a volatility: mapped by Crisis/High Vol only
    assert list(rule.from_volatility(np.array(["Bear", "High Vol"]))) == ["calm", "turbulent"]


def test_regime_model_probabilities_follow_the_rule() -> None:
    class Stub:
        classes_ = np.array(["calm", "turbulent"], dtype=object)

        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            return np.c_[1 - x[:, 0], x[:, 0]]

    features = ["p", "drawdown_252", "sma50_slope", "close_vs_sma200"]
    model = RegimeModel(Stub(), features, RegimeRule())
    x = np.array([[0.8, -0.3, 0.01, -0.1], [0.2, -0.01, 0.01, 0.1], [0.5, -0.01, 0.01, 0.1]])
    labels, proba = model.finish(model.estimator.predict_proba(x), x)
    assert list(labels) == ["Crisis", "Bull", "Bull"]  # a tie at the cut-off is calm
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    classes = list(model.classes_)
    assert proba[0, classes.index("Crisis")] == pytest.approx(0.8)
    assert proba[0, classes.index("Low Vol")] == pytest.approx(0.2)  # calm would be Low Vol
    assert list(model.predict(x)) == list(labels)


def test_balanced_rule_lets_a_rare_regime_win_on_less_evidence() -> None:
    """With priors the cut-off is prior(turbulent regime) / (sum of both priors)."""
    from quantshift_ml.regimes import balanced_cutoff

    priors = {"Bull": 0.5, "Low Vol": 0.2, "High Vol": 0.05, "Bear": 0.15, "Crisis": 0.1}
    assert balanced_cutoff(priors, "Bull", "High Vol") == pytest.approx(0.05 / 0.55)
    assert balanced_cutoff(priors, "Low Vol", "Crisis") == pytest.approx(0.1 / 0.3)
    assert balanced_cutoff({"Bull": 1.0}, "Bull", "Crisis") == pytest.approx(0.001 / 1.001)

    class Stub:
        classes_ = np.array(["calm", "turbulent"], dtype=object)

        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            return np.c_[1 - x[:, 0], x[:, 0]]

    features = ["p", "drawdown_252", "sma50_slope", "close_vs_sma200", "hmm_filter"]
    x = np.array([[0.2, -0.01, 0.01, 0.1, 0.0],    # Bull/High Vol: 0.2 > 0.091
                  [0.05, -0.01, 0.01, 0.1, 0.0],   # below it: Bull
                  [0.05, -0.01, 0.01, 0.1, 0.6],   # the filter says more (max rule)
                  [0.3, -0.3, -0.01, -0.1, 0.0]])  # Low Vol/Crisis: 0.3 < 0.333
    plain = RegimeModel(Stub(), features, RegimeRule(), priors=priors)
    combined = RegimeModel(Stub(), features, RegimeRule(), priors=priors,
                           counterpart="hmm_filter")
    assert list(plain.predict(x)) == ["High Vol", "Bull", "Bull", "Low Vol"]
    assert list(combined.predict(x)) == ["High Vol", "Bull", "High Vol", "Low Vol"]
    proba = combined.predict_proba(x)
    assert proba[2, list(combined.classes_).index("High Vol")] == pytest.approx(0.6)
    for model in (plain, combined):  # the service's one-row path agrees with the array path
        est = model.estimator.predict_proba(x)
        labels, probs = model.finish(est, x)
        for i in range(len(x)):
            one, row = model.finish_one(est[i], x[i])
            assert one == labels[i] and row == pytest.approx(list(probs[i]))
    old = RegimeModel(Stub(), features, RegimeRule(), threshold=0.1)
    del old.__dict__["priors"], old.__dict__["counterpart"]  # a bundle pickled before them
    assert list(old.predict(x)) == ["High Vol", "Bull", "Bull", "Crisis"]  # its threshold
    nan_filter = x.copy()
    nan_filter[:, 4] = np.nan  # the first bar's filter: the forest alone, on both paths
    assert list(combined.predict(nan_filter)) == list(plain.predict(nan_filter))
    est = combined.estimator.predict_proba(nan_filter)
    assert [combined.finish_one(est[i], nan_filter[i])[0] for i in range(len(x))] == list(
        plain.predict(nan_filter))


def test_settled_state_is_the_filter_at_lag_0_and_the_smoother_at_full_lag(
        bars: pd.DataFrame, fitted: hmm.HmmParams) -> None:
    r = hmm.returns_pct(bars["Close"])[1:1500]
    np.testing.assert_allclose(hmm.settled(fitted, r, 0), hmm.filtered(fitted, r), atol=1e-12)
    late = hmm.settled(fitted, r, 600)
    np.testing.assert_allclose(late[:800], hmm.smoothed(fitted, r)[:800], atol=1e-9)
    assert np.isnan(late[-600:]).all()  # not known yet
    lag20 = hmm.settled(fitted, r, 20)[:1400]
    # known 20 bars later: mostly but not always the final state
    agree = float(np.mean((lag20 > 0.5) == (hmm.smoothed(fitted, r)[:1400] > 0.5)))
    assert 0.9 < agree < 1.0
