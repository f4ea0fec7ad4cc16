"""Features are causal and scale-free; labelers follow their documented thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from quantshift_ml.model.features import FEATURES, WARMUP_ROWS, compute_features, usable
from quantshift_ml.model.labels import ForwardLabeler, RulesLabeler, make_labeler


def test_features_are_causal(bars: pd.DataFrame) -> None:
    short = compute_features(bars.iloc[:1500])
    longer = compute_features(bars.iloc[:1800])
    pd.testing.assert_frame_equal(short, longer.iloc[:1500])


def test_features_are_scale_free(bars: pd.DataFrame) -> None:
    scaled = bars.copy()
    scaled[["Open", "High", "Low", "Close"]] /= 10.0
    scaled["Volume"] *= 3.0
    a = compute_features(bars.iloc[:800])
    b = compute_features(scaled.iloc[:800])
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=1e-12)


def test_no_gaps_after_warmup(bars: pd.DataFrame) -> None:
    feats = compute_features(bars)
    assert list(feats.columns) == list(FEATURES)
    assert usable(feats).iloc[WARMUP_ROWS:].all()


def test_rules_thresholds() -> None:
    feats = pd.DataFrame({"atr_ratio": [2.5, 1.7, 1.0, 1.3, 1.0, 1.0],
                          "sma50_slope": [0.0, 0.0, 0.01, 0.01, -0.01, 0.0]})
    got = list(RulesLabeler().predict_from_features(feats))
    assert got == ["Crisis", "High Vol", "Bull", "Low Vol", "Bear", "Low Vol"]


def test_forward_labels_leave_last_horizon_unlabeled(bars: pd.DataFrame) -> None:
    lab = ForwardLabeler(horizon=20)
    labels = lab.label(bars, compute_features(bars))
    assert labels.iloc[-20:].isna().all()
    assert labels.iloc[-21:-20].notna().all()
    # October 2008: realised volatility far above 35 % -> Crisis
    assert labels.loc["2008-10-01"] == "Crisis"


def test_forward_labels_do_not_depend_on_the_past_beyond_t(bars: pd.DataFrame) -> None:
    feats = compute_features(bars)
    full = ForwardLabeler().label(bars, feats)
    cut = ForwardLabeler().label(bars.iloc[1000:], feats.iloc[1000:])
    pd.testing.assert_series_equal(full.iloc[1000:], cut, check_names=False)


def test_make_labeler_params() -> None:
    assert make_labeler("forward", horizon=10).horizon == 10
