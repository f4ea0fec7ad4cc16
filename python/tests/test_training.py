"""Leakage-free evaluation: time order, embargo, baselines, reproducibility."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from quantshift_ml.errors import DataError
from quantshift_ml.training.gate import GateConfig, decide, gate_for
from quantshift_ml.training.pipeline import train_candidate
from quantshift_ml.training.results import Scores
from quantshift_ml.walkforward.monthly import run_walkforward

from .conftest import FAST


def test_holdout_is_after_train_with_embargo(bars: pd.DataFrame) -> None:
    res = train_candidate(bars, FAST)
    d = res.data
    idx = bars.index
    train_end = idx.get_loc(pd.Timestamp(d["train_end"]))
    hold_start = idx.get_loc(pd.Timestamp(d["holdout_start"]))
    assert hold_start - train_end > res.metrics["gap_rows"]
    json.dumps(res.metrics), json.dumps(res.baselines), json.dumps(res.labeler)  # JSON-native
    assert {"rule", "persistence", "majority", "hmm_filter"} <= set(res.baselines)
    assert len(res.metrics["top_features"]) == 5
    # hmm: the last 20 bars are not settled, so the holdout ends 20 bars before the data
    assert d["holdout_end"] == str(idx[-21].date())


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
    cfg = replace(FAST, labeler="rules", stress_memory=False)
    res = train_candidate(bars, cfg, as_of="2006-12-29")  # 2005-2006: no Crisis days
    assert res.metrics["per_class"]["Crisis"]["support"] == 0
    assert res.metrics["per_class"]["Crisis"]["recall"] is None


def test_stress_memory_brings_rare_regimes_into_calm_windows(bars: pd.DataFrame) -> None:
    res = train_candidate(bars, replace(FAST, labeler="rules"), as_of="2006-12-29")
    assert res.metrics["stress_memory_rows"] > 0 and res.metrics["memory"] == "stress"
    assert "High Vol" in res.bundle["classes"]


def test_hmm_trains_on_all_settled_history_and_records_its_fit(bars: pd.DataFrame) -> None:
    res = train_candidate(bars, FAST, as_of="2006-12-29")  # a calm window: 2005-2006
    m = res.metrics
    assert m["memory"] == "all" and m["stress_memory_rows"] > 1000
    assert res.data["train_start"] < "2001-01-01"
    assert [str(c) for c in res.bundle["model"].estimator.classes_] == ["calm", "turbulent"]
    priors = m["learned_axis"]["priors"]  # the training rows' regime shares
    assert abs(sum(priors.values()) - 1.0) < 1e-4
    assert 0.1 < priors["Crisis"] + priors["Bear"] + priors["High Vol"] < 0.6
    assert m["learned_axis"]["counterpart"] == "hmm_filter"  # the default max rule
    fitted = res.labeler["fitted"]
    assert fitted["n_obs"] == len(bars.loc[:"2006-12-29"]) - 1  # fitted on known bars only
    assert fitted["annual_vol"][0] < fitted["annual_vol"][1]


def test_incumbent_scored_on_the_same_holdout(bars: pd.DataFrame) -> None:
    first = train_candidate(bars, FAST, as_of="2018-06-29")
    second = train_candidate(bars, FAST, incumbent=first.bundle)
    assert second.incumbent is not None
    assert 0.0 <= second.incumbent["accuracy"] <= 1.0
    assert second.incumbent["n"] == second.metrics["holdout_rows"]


def test_too_short_history_is_a_data_error(bars: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="needed"):
        train_candidate(bars.iloc[:400], FAST)


def _acc(accuracy: float) -> Scores:
    return Scores(n=100, accuracy=accuracy, balanced_accuracy=0.0)


def test_gate_states_the_numbers() -> None:
    gate = GateConfig(metric="test_accuracy", floor=0.75, max_regression=0.05,
                      beat_baseline="majority", baseline_tolerance=0.0)
    ok = decide(_acc(0.9), _acc(0.92), gate)
    assert ok["passed"]
    low = decide(_acc(0.7), None, gate)
    assert not low["passed"] and "0.700" in low["summary"] and "0.750" in low["summary"]
    worse = decide(_acc(0.8), _acc(0.9), gate)
    assert not worse["passed"] and "incumbent" in worse["reasons"][0]
    trivial = decide(_acc(0.8), None, gate, {"majority": _acc(0.85)})
    assert not trivial["passed"] and "majority baseline 0.850" in trivial["reasons"][0]


def test_walkforward_reports_baselines_and_stress(bars: pd.DataFrame) -> None:
    rep = run_walkforward(bars, FAST, gate_for("hmm"), start="2017-07-01")
    assert rep["months"] == 17  # Dec 2018: its labels are not settled yet (20 bars)
    assert {"rule", "persistence", "majority", "rv20_threshold", "hmm_filter",
            "hmm_filter_tuned", "hmm_filter_balanced", "hmm_range_tuned",
            "persistence_hindsight"} == set(rep["baselines"])
    assert "2018-02..2018-03" in rep["stress_periods"]
    assert 0.0 <= rep["gate_pass_rate"] <= 1.0
    sb = rep["strongest_baseline"]
    # the hindsight persistence uses the future: reported, never the bar to beat
    assert sb["name"] in rep["baselines"] and sb["name"] != "persistence_hindsight"
    assert rep["references"] == ["persistence_hindsight"]
    assert sb["ci95"][0] <= sb["margin"] <= sb["ci95"][1]
    assert sb["margin"] == pytest.approx(rep["model"]["balanced_accuracy"]
                                         - rep["baselines"][sb["name"]]["balanced_accuracy"],
                                         abs=2e-4)
    assert len(rep["halves"]) == 2 and sum(h["n"] for h in rep["halves"].values()) == rep[
        "model"]["n"]
    assert set(rep["gate_refusal_rate_by_tolerance"]) == {"0", "0.02", "0.05", "0.1", "0.15",
                                                          "0.2"}
    eco = rep["economics"]
    assert {"buy_and_hold", "model", "hmm_filter"} <= set(eco)
    assert eco["buy_and_hold"]["exposure"] == 1.0 and eco["model"]["max_drawdown"] <= 0.0
    for name in rep["baselines"]:
        assert rep["baselines"][name]["balanced_accuracy"] < 0.99
    out = rep["outcomes"]  # every predictor on what the market did, same bars
    assert set(out["predictors"]) == {"model", "champion", *rep["baselines"]}
    model = out["predictors"]["model"]
    assert set(model) == {"forward_vol", "forward_drawdown", "economic", "settled_state"}
    assert model["settled_state"]["balanced_accuracy"] == rep["model"]["balanced_accuracy"]
    assert model["economic"]["samples"] == rep["model"]["n"]
    vs = out["model_vs_strongest"]
    assert vs["baseline"] == sb["name"] and vs["economic"]["ci95"][0] <= vs["economic"][
        "difference"] <= vs["economic"]["ci95"][1]
    json.dumps(rep)


def test_walkforward_trains_each_month_on_labels_known_before_it(bars: pd.DataFrame,
                                                                  monkeypatch) -> None:
    """Every monthly fit sees only rows whose label settled before the month began."""
    from quantshift_ml.walkforward import monthly as wf

    seen: list[tuple[int, int]] = []
    real = wf.split_window

    def spy(ds, config, end_pos, *, origin):
        split = real(ds, config, end_pos, origin=origin)
        known = np.nonzero(ds.valid)[0]
        seen.append((int(max(split.train.max(), split.holdout.max())), int(known.max())))
        return split

    monkeypatch.setattr(wf, "split_window", spy)
    rep = wf.run_walkforward(bars, FAST, gate_for("hmm"), start="2018-07-01")
    idx = bars.index
    for (used, known), window in zip(seen, rep["windows"], strict=True):
        month_start = idx.get_loc(idx[idx.to_period("M") == window["month"]][0])
        assert used <= known < month_start - 20  # settled (20 bars) before the month


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


def test_ensemble_is_a_soft_vote_of_three_seeded_models(bars: pd.DataFrame) -> None:
    cfg = replace(FAST, estimator="ensemble")
    a = train_candidate(bars, cfg, as_of="2012-06-29")
    est = a.bundle["model"].estimator
    assert est.voting == "soft" and [n for n, _ in est.estimators] == ["forest", "hgb", "logit"]
    b = train_candidate(bars, cfg, as_of="2012-06-29")
    assert a.metrics == b.metrics  # fixed seeds
    assert a.metrics["top_features"]  # the forest's importances, inside the ensemble


def test_tuning_searches_inside_the_training_rows_only(bars: pd.DataFrame, monkeypatch) -> None:
    from quantshift_ml.training import tuning

    sizes: list[int] = []
    real = tuning.tune_forest

    def spy(x, y, config, *, gap):
        sizes.append(len(x))
        return real(x, y, config, gap=gap)

    monkeypatch.setattr(tuning, "tune_forest", spy)
    res = train_candidate(bars, replace(FAST, tune=True, tune_trials=3), as_of="2012-06-29")
    m = res.metrics
    assert sizes == [m["train_rows"] + m["stress_memory_rows"]]  # never the holdout's rows
    trials = m["tuning"]["trials"]
    assert len(trials) == 3 and trials[0]["params"] == {
        "max_depth": 10, "max_features": 0.5, "min_samples_leaf": 1}  # the default competes
    best = m["tuning"]["best"]
    assert best["cv_balanced_accuracy"] == max(t["cv_balanced_accuracy"] for t in trials)
    forest = res.bundle["model"].estimator
    assert forest.min_samples_leaf == best["params"]["min_samples_leaf"]


def test_one_training_computes_features_and_fits_the_labeler_once(tmp_path, monkeypatch) -> None:
    from quantshift_ml.data import BundledSource
    from quantshift_ml.model import hmm
    from quantshift_ml.ops import operations
    from quantshift_ml.training import pipeline

    calls = {"features": 0, "hmm": 0}
    real_features, real_fit = pipeline.compute_features, hmm.fit

    def features(bars):
        calls["features"] += 1
        return real_features(bars)

    def fit(*args, **kwargs):
        calls["hmm"] += 1
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(pipeline, "compute_features", features)
    monkeypatch.setattr(hmm, "fit", fit)
    out = operations.train(BundledSource(), root=tmp_path, config=FAST, as_of="2012-06-29",
                           check_mode=True)
    assert out["metrics"]["holdout_rows"] > 0
    assert calls == {"features": 1, "hmm": 1}  # the history check's, reused by training


def test_scoring_a_backup_trains_nothing(tmp_path, monkeypatch) -> None:
    """The rollback floor check scores the stored model on the holdout a fresh candidate
    would get: features and the labeler's truth, no forest, no CV, no baselines."""
    from quantshift_ml.data import BundledSource
    from quantshift_ml.ops import operations
    from quantshift_ml.training import fit, model, pipeline

    from .conftest import OPEN

    out = operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN,
                           as_of="2012-06-29", promote=True)

    def refuse(*args, **kwargs):
        raise AssertionError("evaluate_artifact must not train")

    for module, name in ((pipeline, "fit_estimator"), (pipeline, "fit_forest"),
                         (pipeline, "walk_forward_cv"), (pipeline, "baselines_on"),
                         (model, "fit_forest"), (fit, "fit_estimator")):
        monkeypatch.setattr(module, name, refuse)
    pkl = tmp_path / "models/regime_classifier.pkl"
    ev = operations.evaluate_artifact(pkl, BundledSource(), root=tmp_path, as_of="2012-06-29")
    # the same model on the same rows: the numbers its training reported
    assert ev["version"] == out["version"] and ev["error"] is None
    assert ev["accuracy"] == out["metrics"]["test_accuracy"]
    assert ev["metric"] == "balanced_accuracy"
    assert ev["value"] == ev["balanced_accuracy"] == out["metrics"]["balanced_accuracy"]
    assert ev["holdout"]["holdout_end"] == out["data"]["holdout_end"]
    assert ev["meets_floor"] is True
    above = operations.evaluate_artifact(pkl, BundledSource(), root=tmp_path,
                                         as_of="2012-06-29", floor=1.0)
    assert above["floor"] == 1.0 and above["meets_floor"] is (above["value"] >= 1.0)


def test_incumbent_is_scored_with_its_own_hmm_filter(bars: pd.DataFrame, monkeypatch) -> None:
    """A stored hmm model is fed the filter of *its* HMM fit, as the service feeds it,
    not the filter of the HMM the new training just fitted."""
    from quantshift_ml.model.features import model_frame
    from quantshift_ml.training import pipeline

    old = train_candidate(bars, FAST, as_of="2008-12-31").bundle
    prep = pipeline.check_history(bars, FAST, as_of="2011-12-30")
    fed: list[pd.DataFrame] = []
    real = pipeline.predict
    monkeypatch.setattr(pipeline, "predict", lambda b, f: fed.append(f) or real(b, f))
    assert isinstance(pipeline.score_incumbent(old, prep.ds, prep.split), Scores)
    hold = prep.split.holdout
    own = model_frame(bars.iloc[: hold[-1] + 1], old["labeler"])["hmm_filter"].iloc[hold]
    new = prep.ds.features["hmm_filter"].iloc[hold]
    assert float(np.abs(own.to_numpy() - new.to_numpy()).max()) > 1e-3  # two different fits
    np.testing.assert_allclose(fed[0]["hmm_filter"].to_numpy(), own.to_numpy(), atol=1e-12)


def test_fair_persistence_reads_only_bars_before_the_day(bars: pd.DataFrame) -> None:
    """What persistence reads for day t (the state of t-21, known 20 bars later) comes
    from closes up to t-1: changing the closes from t on changes none of it."""
    from quantshift_ml.model.labels import make_labeler
    from quantshift_ml.training.pipeline import prepare_dataset, relabel

    full = prepare_dataset(bars.iloc[:3000], make_labeler("hmm"))
    ds = relabel(full, 2500)
    t = 2600
    shocked_bars = ds.bars.copy()
    shocked_bars.iloc[t:, shocked_bars.columns.get_loc("Close")] *= np.exp(
        np.random.default_rng(0).normal(0, 0.05, len(shocked_bars) - t)).cumprod()
    p, q = ds.labeler.settled(ds.bars, ds.fitted), ds.labeler.settled(shocked_bars, ds.fitted)
    np.testing.assert_array_equal(p[1: t - 20], q[1: t - 20])  # days up to t-21: unchanged
    assert np.abs(p[t - 20: t + 200] - q[t - 20: t + 200]).max() > 1e-3  # later ones read them
    assert ds.labeler.known_target(ds.bars, ds.features, ds.fitted).to_numpy()[t - 21] in (
        "calm", "turbulent")
