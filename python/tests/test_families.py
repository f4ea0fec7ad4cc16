"""Families behind one interface (issue 25): each fitted on the same window answers as
the walk-forward's rows did, and a filter's servable spec is JSON, checked, and
evaluated without scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest

from quantshift_ml.champion import families
from quantshift_ml.errors import IntegrityError, UsageError
from quantshift_ml.model import filterspec
from quantshift_ml.training.model import predict
from quantshift_ml.training.pipeline import (
    Prepared,
    baseline_predictions,
    check_history,
    train_candidate,
)

from .conftest import FAST


@pytest.fixture(scope="module")
def prepared(bars: pd.DataFrame) -> Prepared:
    return check_history(bars, FAST)


def _train(prep: Prepared) -> np.ndarray:
    return np.concatenate([prep.split.stress, prep.split.train])


@pytest.mark.parametrize(("name", "baseline"), [("hmm_filter", "hmm_filter_tuned"),
                                                ("hmm_range_filter", "hmm_range_tuned")])
def test_a_filter_family_answers_as_its_baseline_did(prepared: Prepared, name: str,
                                                     baseline: str) -> None:
    ds, hold = prepared.ds, prepared.split.holdout
    fitted = families.family(name).fit(ds, _train(prepared), FAST)
    got = fitted.predict(ds, hold)
    want = baseline_predictions(ds, _train(prepared), hold)[baseline]
    assert list(got.regimes) == list(want)
    assert len(set(got.regimes)) >= 2 and np.all((got.p_turbulent >= 0) & (got.p_turbulent <= 1))


def test_the_forest_family_is_the_pipelines_model(bars: pd.DataFrame, prepared: Prepared) -> None:
    ds, hold = prepared.ds, prepared.split.holdout
    fitted = families.family("forest").fit(ds, _train(prepared), FAST, gap=prepared.split.gap)
    result = train_candidate(bars, FAST, prepared=prepared)
    assert list(fitted.predict(ds, hold).regimes) == list(
        predict(result.bundle, ds.features.iloc[hold]))
    assert fitted.spec()["serving"]["features"] == result.bundle["features"]


def _spec(prepared: Prepared, name: str = "hmm_range_filter") -> dict[str, Any]:
    fitted = families.family(name).fit(prepared.ds, _train(prepared), FAST)
    return json.loads(json.dumps(fitted.spec()))  # what a release would carry


def test_a_filter_spec_round_trips_through_json_and_answers_the_same(prepared: Prepared
                                                                      ) -> None:
    ds, hold = prepared.ds, prepared.split.holdout
    raw = _spec(prepared)
    spec = filterspec.FilterSpec.from_dict(raw)
    assert spec.to_dict() == raw
    p = filterspec.p_turbulent(spec, ds.bars)
    assert list(filterspec.regimes(spec, p[hold], ds.features.iloc[hold])) == list(
        families.family("hmm_range_filter").fit(ds, _train(prepared), FAST)
        .predict(ds, hold).regimes)
    row = ds.features.iloc[hold[-1]]
    regime = filterspec.regimes(spec, p[hold[-1:]], ds.features.iloc[hold[-1:]])[0]
    p_last = float(p[hold[-1]])
    proba = filterspec.probabilities(regime, p_last, spec, row)
    assert abs(sum(proba.values()) - 1.0) < 1e-3
    want = round(p_last, 4) if p_last > spec.cutoff else round(1.0 - p_last, 4)
    assert proba[regime] == pytest.approx(want, abs=1e-4)  # the answer's own share


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.update(format=2), "format 2"),
    (lambda s: s.update(family="forest"), "not a filter family"),
    (lambda s: s.update(range_law=None), "range law belongs"),
    (lambda s: s["hmm"].update(variances=[1.0, -2.0]), "positive variances"),
    (lambda s: s["hmm"].update(transmat=[[0.9, 0.2], [0.1, 0.9]]), "sum to 1"),
    (lambda s: s.update(cutoff=float("nan")), "non-finite"),
    (lambda s: s.pop("hmm"), "not a valid filter spec"),
])
def test_a_damaged_filter_spec_is_refused_naming_what_is_wrong(
        prepared: Prepared, edit: Any, message: str) -> None:
    raw = _spec(prepared)
    edit(raw)
    with pytest.raises(IntegrityError, match=message):
        filterspec.FilterSpec.from_dict(raw, where="release 1")


def test_evaluating_a_filter_spec_imports_no_scikit_learn() -> None:
    code = ("import sys, quantshift_ml.model.filterspec; "
            "bad = [m for m in ('sklearn', 'hmmlearn', 'joblib') if m in sys.modules]; "
            "sys.exit(str(bad) if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_unknown_families_and_a_filter_without_the_hmm_labeler_are_refused(
        bars: pd.DataFrame) -> None:
    with pytest.raises(UsageError, match=r"unknown family 'garch'.*forest"):
        families.family("garch")
    rules = check_history(bars, FAST.__class__(labeler="rules", model=FAST.model, cv_folds=3))
    assert families.available(rules.ds) == ["forest"]
    with pytest.raises(UsageError, match="needs the hmm labeler"):
        families.family("hmm_filter").fit(rules.ds, _train(rules), FAST)


def test_families_are_listed_simplest_first(prepared: Prepared) -> None:
    assert families.available(prepared.ds) == ["hmm_filter", "hmm_range_filter", "forest"]
    assert families.available(prepared.ds, ["forest", "hmm_filter"]) == ["hmm_filter",
                                                                          "forest"]


@pytest.mark.parametrize("name", ["hmm_filter", "hmm_range_filter"])
def test_a_filter_explanation_adds_up_to_its_answer(prepared: Prepared, name: str) -> None:
    ds = prepared.ds
    spec = filterspec.FilterSpec.from_dict(_spec(prepared, name))
    end = int(prepared.split.holdout[-1]) + 1
    why = filterspec.explain(spec, ds.bars.iloc[:end], ds.features.iloc[:end])
    total = why["prior_log_odds"] + sum(t["log_likelihood_ratio"] for t in why["terms"])
    assert abs(total - why["posterior_log_odds"]) < 1e-3  # Bayes' rule, exactly
    assert [t["input"] for t in why["terms"]] == (
        ["return_pct", "log_range"] if name == "hmm_range_filter" else ["return_pct"])
    assert why["turbulent"] == (why["p_turbulent"] > why["cutoff"])
    p = filterspec.p_turbulent(spec, ds.bars.iloc[:end])
    assert why["regime"] == filterspec.regimes(spec, p[-1:], ds.features.iloc[end - 1:end])[0]
