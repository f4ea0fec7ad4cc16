"""Leakage-free evaluation: time order, embargo, baselines, reproducibility."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from quantshift_ml.errors import DataError
from quantshift_ml.gate import GateConfig, decide
from quantshift_ml.training.pipeline import train_candidate
from quantshift_ml.training.walkforward import run_walkforward

from .conftest import FAST


def test_holdout_is_after_train_with_embargo(bars: pd.DataFrame) -> None:
    res = train_candidate(bars, FAST)
    d = res.data
    idx = bars.index
    train_end = idx.get_loc(pd.Timestamp(d["train_end"]))
    hold_start = idx.get_loc(pd.Timestamp(d["holdout_start"]))
    assert hold_start - train_end > res.metrics["gap_rows"]
    assert d["holdout_end"] == "2018-12-31"
    json.dumps(res.metrics), json.dumps(res.baselines)  # JSON-native throughout
    assert set(res.baselines) == {"rule", "persistence", "majority"}
    assert len(res.metrics["top_features"]) == 5


def test_forward_labeler_gap_covers_horizon(bars: pd.DataFrame) -> None:
    cfg = replace(FAST, labeler="forward", gap=5)
    res = train_candidate(bars, cfg)
    assert res.metrics["gap_rows"] == 20  # raised to the label horizon
    # the last labeled bar is H bars before the data's end
    assert res.data["holdout_end"] < "2018-12-31"


def test_reproducible_with_fixed_seed(bars: pd.DataFrame) -> None:
    a = train_candidate(bars, FAST, as_of="2012-06-29")
    b = train_candidate(bars, FAST, as_of="2012-06-29")
    assert a.metrics == b.metrics
    x = a.holdout_features
    np.testing.assert_array_equal(a.bundle["model"].predict(x.to_numpy()),
                                  b.bundle["model"].predict(x.to_numpy()))


def test_calm_window_without_rare_classes_does_not_crash(bars: pd.DataFrame) -> None:
    cfg = replace(FAST, stress_memory=False)
    res = train_candidate(bars, cfg, as_of="2006-12-29")  # 2005-2006: no Crisis days
    assert res.metrics["per_class"]["Crisis"]["support"] == 0
    assert res.metrics["per_class"]["Crisis"]["recall"] is None


def test_stress_memory_brings_rare_regimes_into_calm_windows(bars: pd.DataFrame) -> None:
    res = train_candidate(bars, FAST, as_of="2006-12-29")
    assert res.metrics["stress_memory_rows"] > 0
    assert "High Vol" in res.bundle["classes"]


def test_incumbent_scored_on_the_same_holdout(bars: pd.DataFrame) -> None:
    first = train_candidate(bars, FAST, as_of="2018-06-29")
    second = train_candidate(bars, FAST, incumbent=first.bundle)
    assert second.incumbent is not None
    assert 0.0 <= second.incumbent["accuracy"] <= 1.0
    assert second.incumbent["n"] == second.metrics["holdout_rows"]


def test_too_short_history_is_a_data_error(bars: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="needed"):
        train_candidate(bars.iloc[:400], FAST)


def test_gate_states_the_numbers() -> None:
    gate = GateConfig(floor=0.75, max_regression=0.05)
    ok = decide({"test_accuracy": 0.9}, {"accuracy": 0.92}, gate)
    assert ok["passed"]
    low = decide({"test_accuracy": 0.7}, None, gate)
    assert not low["passed"] and "0.700" in low["summary"] and "0.750" in low["summary"]
    worse = decide({"test_accuracy": 0.8}, {"accuracy": 0.9}, gate)
    assert not worse["passed"] and "incumbent" in worse["reasons"][0]
    trivial = decide({"test_accuracy": 0.8}, None, gate, {"majority": {"accuracy": 0.85}})
    assert not trivial["passed"] and "majority baseline 0.850" in trivial["reasons"][0]


def test_walkforward_reports_baselines_and_stress(bars: pd.DataFrame) -> None:
    rep = run_walkforward(bars, FAST, GateConfig(), start="2018-01-01")
    assert rep["months"] == 12
    assert set(rep["baselines"]) == {"rule", "persistence", "majority"}
    assert "2018-02..2018-03" in rep["stress_periods"]
    assert 0.0 <= rep["gate_pass_rate"] <= 1.0
    json.dumps(rep)


def test_model_params_checks_every_key_and_keeps_the_defaults() -> None:
    from quantshift_ml.errors import UsageError
    from quantshift_ml.training.config import ModelParams, model_params

    assert model_params({}) == ModelParams()
    assert model_params({"max_features": 1}).max_features == 1  # one feature, not all
    assert model_params({"max_features": 1.0}).max_features == 1.0  # every feature
    assert model_params({"max_features": "none", "max_depth": None}).max_depth is None
    assert model_params({"n_estimators": "300", "class_weight": "balanced"}) == ModelParams(
        n_estimators=300, class_weight="balanced")
    with pytest.raises(UsageError, match="unknown Random Forest parameter 'max_featurs'"):
        model_params({"max_featurs": 0.5})
    with pytest.raises(UsageError, match="allowed: n_estimators, max_depth, max_features"):
        model_params({"n_jobs": 4})  # one core per training is the design, not a knob
    for bad in ({"n_estimators": True}, {"n_estimators": 1.5}, {"min_samples_leaf": 0},
                {"max_features": 0}, {"max_features": -0.2}, {"random_state": "x"}):
        with pytest.raises(UsageError):
            model_params(bad)
