"""Explanations (exact SHAP) and drift (importances, inputs) on the bundled S&P 500."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantshift_ml.cli.dispatch import main
from quantshift_ml.data import BundledSource, CsvSource
from quantshift_ml.errors import UsageError
from quantshift_ml.insight.explain import Explainer, explain_active
from quantshift_ml.model.features import FEATURES, compute_features, model_frame, usable
from quantshift_ml.model.regimes import RegimeModel
from quantshift_ml.monitoring import drift
from quantshift_ml.ops import operations
from quantshift_ml.store import ModelStore
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.model import regime_model
from quantshift_ml.training.pipeline import train_candidate

from .conftest import FAST, OPEN, serving


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two promoted versions (2018-06 then 2018-12), the second compared with the first."""
    root = tmp_path_factory.mktemp("explain")
    for as_of in ("2018-06-29", "2018-12-31"):
        operations.train(BundledSource(), root=root, config=FAST, gate=OPEN, promote=True,
                         as_of=as_of)
    return root


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_explain_contributions_sum_to_the_served_probability(store_root: Path,
                                                             bars: pd.DataFrame) -> None:
    bundle, _ = ModelStore(store_root).load_model(ModelStore(store_root).layout.active_pkl)
    model = regime_model(bundle)
    frame = model_frame(bars, bundle["labeler"])[bundle["features"]]
    frame = frame[usable(frame)].loc["2008-01-01":"2018-12-31"]
    x = frame.to_numpy(dtype=float)
    explained = Explainer(model).explain(x, [str(d.date()) for d in frame.index])
    regimes, proba = model.predict(x), model.predict_proba(x)
    classes = [str(c) for c in model.classes_]
    assert len(explained) == len(x) > 2000
    filt = frame["hmm_filter"].to_numpy()
    for i, e in enumerate(explained):
        total = e.base_value + sum(c["shap"] for c in e.contributions)
        assert abs(total - e.forest_probability) < 1e-6, (e.date, total, e.forest_probability)
        assert e.regime == regimes[i]
        assert abs(proba[i, classes.index(e.regime)] - e.probability) < 1e-6
        # the max rule: the served P(turbulent) is the larger of forest and filter
        p_turb = e.probability if e.explained == "turbulent" else 1.0 - e.probability
        f_turb = (e.forest_probability if e.explained == "turbulent"
                  else 1.0 - e.forest_probability)
        assert abs(p_turb - max(f_turb, filt[i])) < 1e-6
        if e.decided_by == "forest":
            assert abs(e.probability - e.forest_probability) < 1e-6
        else:
            assert e.decided_by == "hmm_filter" and abs(p_turb - filt[i]) < 1e-6
        shaps = [abs(c["shap"]) for c in e.contributions]
        assert shaps == sorted(shaps, reverse=True)  # most important first
    states = {e.explained for e in explained}
    assert states == {"calm", "turbulent"}  # 2008 and 2017 both in the rows
    assert {e.decided_by for e in explained} == {"forest", "hmm_filter"}


def test_explain_cli_json_for_a_crisis_day(store_root: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "explain", "--root", str(store_root), "--as-of", "2008-10-15")
    assert code == 0 and out["date"] == "2008-10-15"
    assert out["regime"] == "Crisis" and out["explained"] == "turbulent"
    assert {"regime", "probability", "base_value", "contributions"} <= set(out)
    assert {"feature", "value", "shap"} == set(out["contributions"][0])
    assert abs(out["base_value"] + sum(c["shap"] for c in out["contributions"])
               - out["probability"]) < 1e-6
    assert out["version"] == json.loads(
        (store_root / "models/regime_classifier.json").read_text())["version"]
    code, _ = _run(capsys, "explain", "--root", str(store_root), "--as-of", "1990-01-02")
    assert code == 2  # before the data: a usage error naming the first bar


def test_an_ensemble_is_refused_with_the_reason() -> None:
    from sklearn.ensemble import VotingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)), np.array(["calm", "turbulent"] * 30, dtype=object)
    vote = VotingClassifier([("t", DecisionTreeClassifier()), ("l", LogisticRegression())],
                            voting="soft").fit(x, y)
    with pytest.raises(UsageError, match=r"ensemble.*--estimator forest"):
        Explainer(RegimeModel(vote, ["a", "b", "c"]))


def test_training_records_shap_importances_and_their_drift(store_root: Path) -> None:
    meta = json.loads((store_root / "models/regime_classifier.json").read_text())
    imp = meta["importance"]
    assert set(imp["mean_abs"]) == set(meta["features"]) and imp["rows"] > 50
    assert set(imp["per_class"]) == {"calm", "turbulent"}
    first = ModelStore(store_root).trusted_backups()[-1].meta
    assert meta["importance_drift"]["previous"] == first["version"]
    assert meta["importance_drift"] == {"previous": first["version"], **drift.compare_importance(
        drift.importances(meta) or {}, drift.importances(first) or {})}
    log = (store_root / f"logs/model-training-{meta['version']}.log").read_text()
    assert "Importance (mean |SHAP|): " in log
    assert f"Importance Drift: rank correlation {meta['importance_drift']['spearman']:.3f} " \
           f"vs {first['version']}" in log


def _importances(bars: pd.DataFrame, as_of: str) -> dict[str, float]:
    """The default model's holdout SHAP importances, trained on the window ending ``as_of``."""
    result = train_candidate(bars, TrainConfig(), as_of=as_of)
    summary = Explainer(regime_model(result.bundle)).summary(
        result.holdout_features.to_numpy(dtype=float))
    return summary["mean_abs"]


def test_importance_drift_fires_on_the_2008_10_retrain_and_not_in_a_quiet_month(
        bars: pd.DataFrame) -> None:
    t = drift.Thresholds()
    crash = drift.compare_importance(_importances(bars, "2008-10-31"),
                                     _importances(bars, "2008-09-30"))
    assert drift.importance_status(crash, t) == "CRITICAL", crash
    quiet = drift.compare_importance(_importances(bars, "2017-06-30"),
                                     _importances(bars, "2017-05-31"))
    assert drift.importance_status(quiet, t) == "OK", quiet


def _check(frame: pd.DataFrame, start: str, end: str, as_of: str | None = None) -> dict:
    ref, recent = drift.windows(frame, start, end, 21, as_of)
    return drift.input_drift(ref, recent, drift.Thresholds())


def test_input_drift_in_2008_10_against_2006_2008_and_ok_in_a_quiet_month(
        bars: pd.DataFrame) -> None:
    frame = compute_features(bars)[list(FEATURES)]
    frame = frame[usable(frame)]
    crash = _check(frame, "2006-10-01", "2008-09-30", "2008-10-31")
    # most inputs outside anything 2006-2008 held: the critical level, but drift alone
    # is evidence, never a page (monitor.combine_drift needs an accuracy signal too)
    assert crash["status"] == "WARNING" and crash["critical_level"], crash["share"]
    assert crash["share"] >= 0.8
    assert {"realized_vol_20", "parkinson_vol_20", "drawdown_252"} <= set(crash["drifted"])
    assert crash["recent"] == {"start": "2008-10-03", "end": "2008-10-31", "rows": 21}
    assert crash["reference"]["end"] == "2008-09-30"
    quiet = _check(frame, "2015-06-01", "2017-05-31", "2017-06-30")
    assert quiet["status"] == "OK" and quiet["share"] == 0.0, quiet["drifted"]
    for row in quiet["features"]:  # the numbers are the textbook ones, computed here
        assert row["psi"] >= 0 and 0 <= row["ks"] <= 1 and 0 <= row["p_value"] <= 1
        assert 0 <= row["novelty"] <= 1


def test_a_trend_inside_the_window_is_not_novel_but_a_value_beyond_it_is() -> None:
    """Autocorrelation cannot fake novelty: 21 days far from the centre but inside the
    range seen shift PSI and KS to their maximum, and are not novel."""
    rng = np.random.default_rng(5)
    ref = pd.DataFrame({"slow": np.sin(np.linspace(0, 12, 500)) + rng.normal(0, .01, 500)})
    inside = pd.DataFrame({"slow": np.linspace(0.9, 0.95, 21)})
    beyond = pd.DataFrame({"slow": np.linspace(1.2, 1.4, 21)})
    t = drift.Thresholds()
    a, b = drift.input_drift(ref, inside, t), drift.input_drift(ref, beyond, t)
    assert a["features"][0]["shifted"] and not a["features"][0]["drifted"]
    assert a["status"] == "OK"
    assert b["features"][0]["novelty"] == 1.0 and b["status"] == "WARNING"
    assert b["critical_level"]


def _check_named(name: str, status: str, **extra: object) -> dict:
    return {"name": name, "status": status, "message": name, "value": None, **extra}


def test_drift_pages_only_with_a_failing_accuracy_signal() -> None:
    from quantshift_ml.monitoring.monitor import combine_drift

    for accuracy, critical_level, want in (("OK", True, "WARNING"),
                                           ("WARNING", False, "WARNING"),
                                           ("WARNING", True, "CRITICAL"),
                                           ("UNKNOWN", True, "WARNING")):
        checks = [_check_named("input_drift", "WARNING", critical_level=critical_level),
                  _check_named("live_accuracy", accuracy)]
        combine_drift(checks)
        assert checks[0]["status"] == want, (accuracy, critical_level)
    checks = [_check_named("input_drift", "WARNING", critical_level=True),
              _check_named("live_outcomes", "CRITICAL")]
    combine_drift(checks)
    assert checks[0]["status"] == "CRITICAL" and "live_outcomes failing" in checks[0]["message"]


def _stress_2020_like(bars: pd.DataFrame) -> pd.DataFrame:
    """Calm 2016-2017, then the autumn-2008 crash's daily moves replayed from 2018-01-02
    (a COVID-like shock: a calm market that loses a third in weeks)."""
    calm = bars.loc[:"2017-12-29"]
    shock = bars.loc["2008-09-02":"2008-11-28"]
    scale = calm["Close"].iloc[-1] / bars.loc[:"2008-08-29", "Close"].iloc[-1]
    moved = shock.copy()
    for col in ("Open", "High", "Low", "Close", "Adj Close"):
        if col in moved:
            moved[col] = moved[col] * scale
    moved.index = pd.bdate_range("2018-01-02", periods=len(moved), name=bars.index.name)
    return pd.concat([calm, moved])


def test_input_drift_fires_on_a_2020_like_shock_through_the_monitor_path(
        bars: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stressed = _stress_2020_like(bars)
    csv = tmp_path / "stress.csv"
    stressed.to_csv(csv, index_label="Date")
    calm_root = tmp_path / "r"
    src = CsvSource(csv)
    operations.train(src, root=calm_root, config=FAST, gate=OPEN, promote=True,
                     as_of="2017-12-29")
    code, out = _run(capsys, "drift", "--root", str(calm_root), "--source", "csv",
                     "--data", str(csv))
    assert out["input_drift"]["status"] == "WARNING", out["input_drift"]["message"]
    assert out["input_drift"]["critical_level"] and code == 1  # Nagios codes, like the monitor
    assert out["input_drift"]["recent"]["end"] == str(stressed.index[-1].date())
    code, out = _run(capsys, "drift", "--root", str(calm_root), "--source", "csv",
                     "--data", str(csv), "--as-of", "2017-12-29")
    assert out["input_drift"]["status"] == "OK", out["input_drift"]["message"]
    assert out["importance_drift"]["status"] == "UNKNOWN" and code == 0  # one version only


def test_monitor_reports_both_checks_gauges_and_takes_thresholds_from_the_file(
        store_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    root = tmp_path / "r"
    shutil.copytree(store_root, root)
    prom = tmp_path / "q.prom"
    code, rep = _run(capsys, "monitor", "--root", str(root), "--textfile", str(prom))
    checks = {c["name"]: c for c in rep["checks"]}
    # December 2018 (the S&P 500 fell 9 %) against the model's 2016-2018 window: the
    # slow trend features left the range the model saw; evidence, not a page
    assert checks["input_drift"]["status"] == "WARNING" and code in (1, 2)
    assert "sma200_slope" in checks["input_drift"]["drifted"]
    imp = checks["importance_drift"]
    assert imp["status"] in ("OK", "WARNING", "CRITICAL") and imp["value"] is not None
    assert [h["version"] for h in imp["history"]] == sorted(h["version"] for h in imp["history"])
    assert len(imp["history"]) == 2 and imp["history"][1]["spearman"] == imp["value"]
    text = prom.read_text()
    for metric in ("quantshift_input_drift_share", "quantshift_importance_rank_correlation"):
        assert f"# HELP {metric} " in text and f"{metric}{{" in text
    from prometheus_client.parser import text_string_to_metric_families

    psi = next(f for f in text_string_to_metric_families(text)
               if f.name == "quantshift_input_drift_psi")
    assert any(s.labels.get("host") and s.labels["feature"] == "sma200_slope"
               for s in psi.samples)

    families = list(text_string_to_metric_families(text))  # the exposition format parses
    assert len(families) >= 10
    assert all(f.documentation and f.type == "gauge" for f in families), families
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/monitor.json").write_text(json.dumps({"drift_crit_share": 0.99,
                                                       "drift_warn_share": 0.99}))
    assert code != 2 or any(c["status"] == "CRITICAL" and c["name"] != "input_drift"
                            for c in checks.values())
    code, rep = _run(capsys, "monitor", "--root", str(root), "--json")
    assert {c["name"]: c["status"] for c in rep["checks"]}["input_drift"] == "OK"
    assert rep["thresholds"]["drift_crit_share"] == 0.99
    code, rep = _run(capsys, "monitor", "--root", str(root), "--drift-crit-share", "0.5",
                     "--thresholds-json", '{"drift_days": 0}')
    assert rep["thresholds"]["drift_crit_share"] == 0.5 and rep["thresholds"]["drift_days"] == 0
    messages = {c["name"]: c["message"] for c in rep["checks"]}
    assert messages["input_drift"] == "unknown: disabled (drift_days 0)"


def test_a_bad_thresholds_file_is_refused_by_name(store_root: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"drift_psy": 1.0}))
    code, out = _run(capsys, "monitor", "--root", str(store_root), "--thresholds", str(bad))
    assert code == 2 and "unknown thresholds ['drift_psy']" in out["error"]
    bad.write_text(json.dumps({"drift_psi": "high"}))
    code, out = _run(capsys, "monitor", "--root", str(store_root), "--thresholds", str(bad))
    assert code == 2 and "drift_psi must be a number" in out["error"]
    bad.write_text(json.dumps({"drift_days": None}))
    code, out = _run(capsys, "monitor", "--root", str(store_root), "--thresholds", str(bad))
    assert code == 2 and "drift_days must be a number" in out["error"]
    bad.write_text(json.dumps({"drift_days": 10.5}))
    code, out = _run(capsys, "monitor", "--root", str(store_root), "--thresholds", str(bad))
    assert code == 2 and "drift_days must be a whole number" in out["error"]
    code, out = _run(capsys, "monitor", "--root", str(store_root), "--thresholds",
                     str(tmp_path / "missing.json"))
    assert code == 2 and "does not exist" in out["error"]


def test_service_explains_on_request_only(store_root: Path) -> None:
    with serving(store_root) as (service, get):
        plain = get("/regime")
        assert "explanation" not in plain and service.explainer._explainer is None
        body = get("/regime?explain=1")
    e = body["explanation"]
    assert e["regime"] == body["regime"] and e["date"] == body["as_of"] == "2018-12-31"
    assert abs(e["probability"] - body["probabilities"][body["regime"]]) < 1e-4
    assert abs(e["base_value"] + sum(c["shap"] for c in e["contributions"])
               - e["forest_probability"]) < 1e-6
    assert e["decided_by"] in ("forest", "hmm_filter")
    bundle, _ = ModelStore(store_root).load_model(ModelStore(store_root).layout.active_pkl)
    assert explain_active(bundle, BundledSource().load()).as_dict() == e
