"""Fair baselines on the candidate's rows, and a gate held to the strongest of them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from quantshift_ml.errors import UsageError
from quantshift_ml.model.labels import make_labeler
from quantshift_ml.training import baselines as bl
from quantshift_ml.training.gate import decide, gate_for, strongest
from quantshift_ml.training.pipeline import prepare_dataset, train_candidate
from quantshift_ml.training.results import Scores

from .conftest import FAST


def test_tuned_threshold_finds_the_split_and_its_classes() -> None:
    v = np.r_[np.linspace(0, 1, 50), np.linspace(2, 3, 20)]
    y = np.array(["calm"] * 50 + ["turbulent"] * 20, dtype=object)
    q, below, above = bl.tune_threshold(v, y)
    assert 0.9 <= q < 2.0 and (below, above) == ("calm", "turbulent")  # a grid quantile
    assert list(bl.apply_threshold(np.array([0.5, 2.5]), (q, below, above))) == [
        "calm", "turbulent"]


def test_persistence_reads_the_newest_settled_label(bars: pd.DataFrame) -> None:
    ds = prepare_dataset(bars.iloc[:3000], make_labeler("hmm"))
    target = ds.target.to_numpy()
    rows = np.arange(2700, 2750)
    inputs = bl.BaselineInputs(bars=ds.bars, features=ds.features, target=target,
                               train=np.arange(300, 2600), rows=rows, labeler=ds.labeler,
                               fitted=ds.fitted)
    got = bl.predict_all(inputs)["persistence"]
    np.testing.assert_array_equal(got, target[rows - 21])  # horizon 20: known 21 bars back


def test_every_baseline_is_scored_on_the_candidates_holdout(bars: pd.DataFrame) -> None:
    res = train_candidate(bars, FAST, as_of="2011-12-30")
    assert set(res.baselines) == {"majority", "persistence", "rule", "rv20_threshold",
                                  "hmm_filter", "hmm_filter_tuned", "hmm_filter_balanced",
                                  "hmm_range_tuned"}
    for rep in res.baselines.values():
        assert rep["n"] == res.metrics["holdout_rows"]
        assert rep["balanced_accuracy"] < 0.99  # the target is not a function of today
    fwd = train_candidate(bars, replace(FAST, labeler="forward"), as_of="2011-12-30")
    assert {"har_rv", "gjr_garch"} <= set(fwd.baselines) and "hmm_filter" not in fwd.baselines


def test_gjr_forecast_matches_the_arch_package(bars: pd.DataFrame) -> None:
    """Our GJR-GARCH(1,1) mean-variance forecast is arch's own analytic one."""
    from arch import arch_model

    from quantshift_ml.model import hmm

    r = hmm.returns_pct(bars["Close"])[1:3000]
    res = arch_model(r, mean="Constant", vol="GARCH", p=1, o=1, q=1,
                     dist="normal").fit(disp="off")
    ours = bl.gjr_variance_forecast(r, dict(res.params), 20, float(np.var(r)))
    theirs = res.forecast(horizon=20, start=2000, reindex=False).variance.to_numpy().mean(axis=1)
    np.testing.assert_allclose(ours[2000:], theirs, rtol=1e-4)


def test_composed_tuning_and_the_balanced_rule_serve_the_five_regime_metric(
        bars: pd.DataFrame) -> None:
    """Tuned on the composed regimes, a baseline is at least as good on its training rows
    as one tuned on calm/turbulent (it maximises that very metric)."""
    ds = prepare_dataset(bars.iloc[:3500], make_labeler("hmm"))
    train = np.nonzero(ds.valid)[0][:3000]
    inputs = bl.BaselineInputs(bars=ds.bars, features=ds.features, target=ds.target.to_numpy(),
                               train=train, rows=train, labeler=ds.labeler, fitted=ds.fitted,
                               labels=ds.labels.to_numpy())
    p = ds.features["hmm_filter"].to_numpy()
    rule = ds.labeler.rule
    feats = ds.features.iloc[train]
    y5 = ds.labels.to_numpy()[train]
    composed = rule.compose_frame(bl.tune_composed(inputs, p) == "turbulent", feats)
    binary = rule.compose_frame(bl.apply_threshold(p[train], bl.tune_threshold(
        p[train], ds.target.to_numpy()[train])) == "turbulent", feats)
    assert bl.balanced_accuracy(y5, composed) >= bl.balanced_accuracy(y5, binary)
    balanced = rule.compose_frame(bl.balanced_rule(inputs, p[train]) == "turbulent", feats)
    half = rule.compose_frame(p[train] > 0.5, feats)
    assert bl.balanced_accuracy(y5, balanced) > bl.balanced_accuracy(y5, half)


def test_hindsight_persistence_is_never_the_strongest_baseline() -> None:
    bases = {"persistence_hindsight": Scores(n=100, accuracy=0.95, balanced_accuracy=0.95),
             "hmm_filter_tuned": Scores(n=100, accuracy=0.9, balanced_accuracy=0.85)}
    for labeler in ("hmm", "forward", "rules"):
        assert strongest(bases, "balanced_accuracy", labeler)[0] == "hmm_filter_tuned"


def test_gate_refuses_a_candidate_that_trails_the_strongest_baseline() -> None:
    gate = gate_for("hmm")
    assert (gate.metric, gate.floor, gate.beat_baseline) == ("balanced_accuracy", 0.0,
                                                             "strongest")
    bases = {"persistence": Scores(n=100, accuracy=0.8, balanced_accuracy=0.70),
             "hmm_filter": Scores(n=100, accuracy=0.9, balanced_accuracy=0.82)}
    tol = gate.baseline_tolerance
    ok = decide(Scores(100, 0.0, 0.82 - tol + 0.001), None, gate, bases)
    assert ok["passed"] and ok["baseline_name"] == "hmm_filter"
    bad = decide(Scores(100, 0.0, 0.82 - tol - 0.001), None, gate, bases)
    assert not bad["passed"] and "trails the hmm_filter baseline 0.820" in bad["reasons"][0]
    assert "hmm_filter baseline 0.820" in bad["summary"]


def test_rules_labeler_keeps_the_seed_gate_and_never_counts_its_own_rule() -> None:
    gate = gate_for("rules")
    assert (gate.metric, gate.floor, gate.beat_baseline) == ("test_accuracy", 0.75, "majority")
    bases = {"rule": Scores(n=100, accuracy=1.0, balanced_accuracy=1.0),
             "persistence": Scores(n=100, accuracy=0.93, balanced_accuracy=0.5)}
    assert strongest(bases, "test_accuracy", "rules") == ("persistence", 0.93)
    assert gate_for("hmm", {"floor": 0.6, "beat_baseline": "none"}).beat_baseline is None
    with pytest.raises(UsageError, match="unknown baseline"):
        gate_for("hmm", {"beat_baseline": "oracle"})


def test_rollback_decision_is_the_floor_unless_forced() -> None:
    from quantshift_ml.training.gate import rollback_decision

    ev = {"version": "20261117-020000", "metric": "balanced_accuracy", "value": 0.81234,
          "floor": 0.99}
    refused = rollback_decision(ev)
    assert not refused["allowed"] and not refused["forced"]
    assert refused["message"] == ("Backup 20261117-020000 scores balanced_accuracy 0.8123 on "
                                  "fresh data, below the floor 0.99; refusing")
    forced = rollback_decision(ev, force=True)
    assert forced["allowed"] and forced["forced"] and "forced" in forced["message"]
    assert rollback_decision({**ev, "floor": 0.8})["allowed"]
    assert not rollback_decision({**ev, "value": None, "floor": 0.0})["allowed"]
