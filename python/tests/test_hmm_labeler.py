"""The hmm labeler: ordered states, causal filter, settled labels, the ruled composition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quantshift_ml.errors import DataError
from quantshift_ml.model import hmm
from quantshift_ml.model.features import compute_features
from quantshift_ml.model.labels import HmmLabeler, make_labeler
from quantshift_ml.model.regimes import RegimeModel, RegimeRule
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
    from quantshift_ml.model.regimes import balanced_cutoff

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


def test_known_target_reads_the_filter_column_and_gets_the_same_states(
        bars: pd.DataFrame) -> None:
    ds = prepare_dataset(bars.iloc[:2500], make_labeler("hmm"))
    assert "hmm_filter" in ds.features.columns
    lab = ds.labeler
    assert isinstance(lab, HmmLabeler)
    read = lab.known_target(ds.bars, ds.features, ds.fitted)
    recomputed = lab.known_target(ds.bars, ds.features.drop(columns="hmm_filter"), ds.fitted)
    pd.testing.assert_series_equal(read, recomputed)
    flipped = ds.features.assign(hmm_filter=1.0 - ds.features["hmm_filter"])
    assert not lab.known_target(ds.bars, flipped, ds.fitted).equals(read)  # it is read


def test_range_filter_without_range_information_is_the_returns_filter(
        bars: pd.DataFrame, fitted: hmm.HmmParams) -> None:
    r = hmm.returns_pct(bars["Close"])[1:2000]
    ranges = hmm.log_range(bars.iloc[1:2000])
    same = hmm.RangeLaw(means=(-4.0, -4.0), variances=(0.2, 0.2))  # ranges tell nothing
    np.testing.assert_allclose(hmm.range_filtered(fitted, same, r, ranges),
                               hmm.filtered(fitted, r), atol=1e-12)
    missing = np.full(len(r), np.nan)  # no range on record: the return alone
    law = hmm.range_law(fitted, r, ranges)
    np.testing.assert_allclose(hmm.range_filtered(fitted, law, r, missing),
                               hmm.filtered(fitted, r), atol=1e-12)
    assert law.means[1] > law.means[0]  # turbulent days have wider ranges


def test_range_filter_is_causal_and_reads_wide_ranges_as_turbulence(
        fitted: hmm.HmmParams) -> None:
    rng = np.random.default_rng(7)
    calm_sd, turb_sd = np.sqrt(fitted.variances)
    state = np.r_[np.zeros(300, int), np.ones(100, int), np.zeros(300, int)]
    sd = np.where(state == 1, turb_sd, calm_sd)
    r = rng.normal(0.0, sd)
    # the day's range scales with its volatility, measured far less noisily than r
    ranges = np.log(sd / 100.0 * 1.6) + rng.normal(0.0, 0.25, len(r))
    law = hmm.range_law(fitted, r, ranges)
    p = hmm.range_filtered(fitted, law, r, ranges)
    f = hmm.filtered(fitted, r)
    hits = float(np.mean((p > 0.5) == (state == 1)))
    assert hits > float(np.mean((f > 0.5) == (state == 1))) and hits > 0.97
    part = hmm.range_filtered(fitted, law, r[:350], ranges[:350])
    np.testing.assert_allclose(part, p[:350])  # later days never change day t


def test_range_baseline_learns_its_law_from_bars_up_to_the_newest_training_row(
        bars: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    from quantshift_ml.training import baselines as bl

    ds = prepare_dataset(bars.iloc[:3000], make_labeler("hmm"))
    inputs = dict(features=ds.features, target=ds.target.to_numpy(),
                  train=np.arange(300, 2600), rows=np.arange(2700, 2750), labeler=ds.labeler,
                  fitted=ds.fitted)
    seen: list[np.ndarray] = []
    real_law = hmm.range_law

    def spy(params: hmm.HmmParams, returns: np.ndarray, ranges: np.ndarray) -> hmm.RangeLaw:
        seen.append(np.asarray(ranges).copy())
        return real_law(params, returns, ranges)

    monkeypatch.setattr(hmm, "range_law", spy)
    got = bl._range_filtered(bl.BaselineInputs(bars=ds.bars, **inputs))
    assert len(seen[0]) == 2599  # the ranges of bars 1..2599, the newest training row
    after = ds.bars.copy()
    after.iloc[2600:, after.columns.get_loc("High")] *= 1.5  # after the training rows
    moved = bl._range_filtered(bl.BaselineInputs(bars=after, **inputs))
    np.testing.assert_array_equal(seen[1], seen[0])  # the law never saw them
    np.testing.assert_allclose(got[:2600], moved[:2600])  # nor did the filter before them
    assert not np.allclose(got[2700:2750], moved[2700:2750])  # the filter reads them causally
    beyond = ds.bars.copy()
    beyond.iloc[2750:, beyond.columns.get_loc("High")] *= 1.5  # after the predicted rows
    np.testing.assert_allclose(
        bl._range_filtered(bl.BaselineInputs(bars=beyond, **inputs))[:2750], got[:2750])


def test_range_law_without_enough_ranges_leaves_the_returns_filter(
        fitted: hmm.HmmParams) -> None:
    rng = np.random.default_rng(3)
    r = rng.normal(0.0, 1.0, 400)
    flat = np.full(400, np.nan)  # High == Low == Close: no range on any day
    flat[:10] = -4.0
    assert hmm.range_law(fitted, r, flat) == hmm.UNINFORMATIVE
    np.testing.assert_allclose(hmm.range_filtered(fitted, hmm.UNINFORMATIVE, r, flat),
                               hmm.filtered(fitted, r), atol=1e-12)
    wild = np.full(400, -4.0)
    wild[200] = 60.0  # a range far beyond either state's law: no underflow reset
    law = hmm.RangeLaw(means=(-4.5, -3.9), variances=(0.2, 0.25))
    p = hmm.range_filtered(fitted, law, r, wild)
    assert p[200] > 0.99 and np.isfinite(p).all()
    bad = pd.DataFrame({"High": [2.0, 1.0, 1.0], "Low": [1.0, 1.0, 0.0]})
    assert np.isnan(hmm.log_range(bad)[1:]).all() and np.isfinite(hmm.log_range(bad)[0])
