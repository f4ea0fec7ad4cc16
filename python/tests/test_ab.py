"""A/B testing: assignment, both arms logged, the paired test, replay and the fallback."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from quantshift_ml.cli.dispatch import main
from quantshift_ml.data import BundledSource
from quantshift_ml.errors import UsageError
from quantshift_ml.insight import ab
from quantshift_ml.insight.ab import AbConfig
from quantshift_ml.model.features import compute_features
from quantshift_ml.model.labels import HmmLabeler
from quantshift_ml.monitoring.ab_report import earliest_replay_start, fallback_decision, replay
from quantshift_ml.ops import operations
from quantshift_ml.outcomes import stats as ab_stats
from quantshift_ml.serving import predlog
from quantshift_ml.training.config import TrainConfig

from .conftest import FAST, OPEN, serving


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ab")
    operations.train(BundledSource(), root=root, config=FAST, gate=OPEN, promote=True)
    return root


@pytest.mark.parametrize("split", [0.5, 0.3])
def test_assignment_follows_the_split_within_binomial_tolerance(split: float) -> None:
    cfg = ab.AbConfig(enabled=True, split=split)
    n = 10_000
    arms = [cfg.assign(f"bot-{i}", "SPY", "2018-12-31") for i in range(n)]
    share = arms.count("ml") / n
    assert abs(share - split) < 4 * math.sqrt(split * (1 - split) / n), share
    # one bot, one day: always the same arm; the next day is a fresh draw
    assert {cfg.assign("bot-7", "spy", "2018-12-31") for _ in range(5)} == {arms[7]}
    days = {cfg.assign("bot-7", "SPY", f"2018-12-{d:02d}") for d in range(3, 29)}
    assert days == {"ml", "rules"}
    assert ab.AbConfig().assign("bot-1", "SPY", "2018-12-31") == "ml"  # A/B off
    assert ab.AbConfig(enabled=True, forced="rules").assign("x", "SPY", "d") == "rules"
    with pytest.raises(ab.UsageError):
        ab.AbConfig(split=1.5)


@pytest.mark.parametrize("table", [(50, 10, 20, 20), (40, 3, 9, 48), (10, 0, 0, 5),
                                   (200, 31, 22, 10), (5, 1, 12, 2)])
def test_mcnemar_matches_statsmodels_and_scipy(table: tuple[int, int, int, int]) -> None:
    from scipy.stats import binomtest
    from statsmodels.stats.contingency_tables import mcnemar

    both, ml_only, rules_only, neither = table
    ours = ab_stats.mcnemar_exact(ml_only, rules_only)
    theirs = mcnemar([[both, ml_only], [rules_only, neither]], exact=True).pvalue
    assert ours == pytest.approx(theirs, abs=1e-12)
    if ml_only + rules_only:
        assert ours == pytest.approx(binomtest(ml_only, ml_only + rules_only, 0.5).pvalue,
                                     abs=1e-12)


def test_verdict_names_a_winner_only_when_significant() -> None:
    rng = np.random.default_rng(1)
    months = np.asarray([f"2018-{m:02d}" for m in rng.integers(1, 13, 400)], dtype=object)
    truth = rng.random(400)
    ml = np.zeros(400, bool)
    ml[:330] = True  # 300 both right, 30 the model only, 25 the rules only, 45 neither
    rules = np.zeros(400, bool)
    rules[:300] = True
    rules[330:355] = True
    close = ab_stats.Paired(ml, rules, months).report()
    assert close["p_value"] == pytest.approx(ab_stats.mcnemar_exact(30, 25))
    assert close["winner"] is None and "more samples needed" in close["verdict"]
    assert close["needed_samples"] > close["samples"]
    apart = ab_stats.Paired(truth < 0.9, truth < 0.6, months).report()
    assert apart["winner"] == "ml" and apart["p_value"] < 0.05
    assert apart["ci95"][0] > 0 and "ml wins" in apart["verdict"]
    again = ab_stats.Paired(truth < 0.9, truth < 0.6, months).report()
    assert again["ci95"] == apart["ci95"]  # seeded
    one_month = ab_stats.Paired(truth < 0.9, truth < 0.6,
                                np.full(400, "2018-05", dtype=object)).report()
    assert one_month["p_value"] < 1e-6 and one_month["winner"] is None  # days are not iid
    assert "1 month(s) of bars (need 2)" in one_month["verdict"]


def test_replay_of_2008_judges_on_money_not_on_the_models_own_target() -> None:
    rep = replay(BundledSource().load(), "2008-01-01", "2008-12-31")
    assert set(rep["arms"]) == {"ml", "rules"} and rep["p_value"] is not None
    assert rep["arms"]["ml"]["samples"] == rep["arms"]["rules"]["samples"] > 200
    assert rep["paired"]["samples"] == rep["arms"]["ml"]["samples"]
    assert rep["primary"] == "economic" and set(rep["outcomes"]) == {
        "forward_vol", "forward_drawdown", "economic", "settled_state"}
    own = rep["outcomes"]["settled_state"]
    assert own["winner"] == "ml" and own["p_value"] < 1e-6, own["verdict"]  # by construction
    money = rep["outcomes"]["economic"]
    assert rep["p_value"] == money["p_value"] and rep["winner"] == money["winner"]
    assert money["ci95"][0] < money["difference"] < money["ci95"][1]
    assert all(o["arms"]["ml"]["samples"] > 200 for o in rep["outcomes"].values())
    assert rep["replay"]["model_as_of"] == "2007-12-31"


def test_replay_from_before_a_full_window_starts_at_the_first_bar_that_has_one() -> None:
    bars = BundledSource().load()
    rep = replay(bars, "2001-01-01", "2002-06-28")
    assert rep["replay"]["requested_from"] == "2001-01-01" and rep["replay"]["moved"]
    assert rep["replay"]["from"] == "2002-02-13" == str(earliest_replay_start(
        bars, TrainConfig()).date())
    assert rep["replay"]["model_as_of"] < rep["replay"]["from"]  # never judged on its rows
    assert all(o["arms"]["ml"]["samples"] > 50 for o in rep["outcomes"].values())
    kept = replay(bars, "2008-01-01", "2008-03-31")["replay"]
    assert not kept["moved"] and kept["from"] == "2008-01-02"


def test_replay_on_the_settled_state_when_the_fleet_chooses_it() -> None:
    rep = replay(BundledSource().load(), "2008-01-01", "2008-12-31",
                 ab_config=AbConfig(primary="settled_state"))
    assert rep["primary"] == "settled_state" and rep["winner"] == "ml"


def test_unknown_primary_outcome_is_refused(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ab.json").write_text('{"enabled": true, "primary": "accuracy"}')
    with pytest.raises(UsageError, match="primary outcome must be one of"):
        AbConfig.load(tmp_path)


def test_old_prediction_logs_gain_the_ab_columns(tmp_path: Path) -> None:
    path = predlog.db_path(tmp_path)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:  # the schema before A/B
        conn.execute("CREATE TABLE predictions (ts TEXT NOT NULL, symbol TEXT NOT NULL, "
                     "bar_date TEXT NOT NULL, regime TEXT NOT NULL, probabilities TEXT NOT "
                     "NULL, model_version TEXT NOT NULL)")
        conn.execute("INSERT INTO predictions VALUES ('t', 'SPY', '2018-12-28', 'Bull', '{}', "
                     "'v1')")
    predlog.append(tmp_path, predlog.Prediction("t2", "SPY", "2018-12-31", "Bear", {}, "v1",
                                                arm="rules", ml_regime="Bull",
                                                rules_regime="Bear", client="b"))
    old, new = predlog.read(tmp_path)
    assert (old.arm, old.model_regime, old.rules_regime) == ("ml", "Bull", None)
    assert (new.arm, new.model_regime, new.regime) == ("rules", "Bull", "Bear")
    assert len(predlog.arm_samples(tmp_path)) == 2


def _serve(root: Path, clients: int) -> list[dict]:
    with serving(root) as (_, get):
        return [get(f"/regime?client=bot-{i}") for i in range(clients)]


def test_service_serves_both_arms_logs_both_answers_and_obeys_the_override(
        store_root: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "r"
    shutil.copytree(store_root, root)
    (root / "etc").mkdir(exist_ok=True)
    (root / ab.CONFIG_FILE).write_text(json.dumps({"enabled": True, "split": 0.5}))
    answers = _serve(root, 60)
    arms = [a["arm"] for a in answers]
    assert set(arms) == {"ml", "rules"}
    cfg = ab.AbConfig(enabled=True, split=0.5)
    assert arms == [cfg.assign(f"bot-{i}", "SPY", "2018-12-31") for i in range(60)]
    bars = BundledSource().load()
    f = compute_features(bars).iloc[-1]
    rule = ab.rules_regime(float(f["atr_ratio"]), float(f["sma50_slope"]))
    for a in answers:
        if a["arm"] == "rules":
            assert a["regime"] == rule and a["probabilities"][rule] == 1.0
    logged = predlog.read(root)
    assert len(logged) == 60 and all(p.rules_regime == rule for p in logged)
    ml = {a["regime"] for a in answers if a["arm"] == "ml"}
    assert all(p.ml_regime in ml for p in logged)
    assert [p.arm for p in logged] == arms and logged[0].client == "bot-0"
    ab.set_override(root, "rules", "test", "e1")
    assert {a["arm"] for a in _serve(root, 10)} == {"rules"}


def _log_wrong_model(root: Path, version: str) -> None:
    """50 bars where the model said Crisis and the rules the truth (hmm labels)."""
    bars = BundledSource().load()
    labels = HmmLabeler().label(bars, compute_features(bars)).iloc[-80:-20]
    for day, real in labels.items():
        predlog.append(root, predlog.Prediction(
            f"{day.date()}T21:00:00+00:00", "SPY", str(day.date()), real, {real: 1.0},
            version, arm="rules", ml_regime="Crisis" if real != "Crisis" else "Bull",
            rules_regime=str(real), client="b"))


def test_report_monitor_and_fallback_fire_once_when_the_model_is_worse(
        store_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    root = tmp_path / "r"
    shutil.copytree(store_root, root)
    (root / "etc").mkdir(exist_ok=True)
    # 60 bars are too few for money to name a winner: this fleet decides on the state
    (root / ab.CONFIG_FILE).write_text(json.dumps({"enabled": True, "split": 0.5,
                                                   "primary": "settled_state"}))
    version = json.loads((root / "models/regime_classifier.json").read_text())["version"]
    _log_wrong_model(root, version)
    assert main(["ab", "report", "--root", str(root), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["winner"] == "rules" and rep["arms"]["rules"]["accuracy"] == 1.0
    assert rep["primary"] == "settled_state" and rep["outcomes"]["economic"]["samples"] == 60
    assert rep["paired"]["ml_only"] == 0 and rep["trusted_older_backups"] == 0
    code = main(["monitor", "--root", str(root), "--json", "--drift-days", "0",
                 "--textfile", str(tmp_path / "q.prom")])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert code == 2 and checks["ab_test"]["status"] == "CRITICAL"
    assert checks["live_accuracy"]["value"] == 0.0  # the model's answers, not the served ones
    prom = (tmp_path / "q.prom").read_text()
    from prometheus_client.parser import text_string_to_metric_families

    ab_acc = next(f for f in text_string_to_metric_families(prom)
                  if f.name == "quantshift_ab_accuracy")
    assert any(s.labels.get("host") and s.labels["arm"] == "rules" and s.value == 1
               for s in ab_acc.samples)
    by_outcome = next(f for f in text_string_to_metric_families(prom)
                      if f.name == "quantshift_ab_outcome")
    assert {(s.labels["outcome"], s.labels["arm"]) for s in by_outcome.samples} >= {
        ("economic", "ml"), ("economic", "rules"), ("forward_vol", "ml")}
    decision = fallback_decision({"primary": rep, "standby": rep})
    assert decision["action"] == "serve-rules" and len(decision["reasons"]) == 2
    assert fallback_decision({"primary": {**rep, "trusted_older_backups": 1}})["action"] \
        == "rollback"
    ab.set_override(root, "rules", "; ".join(decision["reasons"]), decision["evidence"])
    assert main(["ab", "report", "--root", str(root), "--json"]) == 0
    forced = json.loads(capsys.readouterr().out)
    assert forced["config"]["forced"] == "rules"
    assert fallback_decision({"primary": forced})["action"] == "none"  # never twice
    ab.set_override(root, None)
    assert main(["ab", "mark", "--root", str(root), "--reason", "rolled back", "--json"]) == 0
    capsys.readouterr()
    assert main(["ab", "report", "--root", str(root), "--json"]) == 0
    after = json.loads(capsys.readouterr().out)  # the evidence before the action is spent
    assert after["paired"]["samples"] == 0 and after["since"] and after["config"]["forced"] is None


def test_fallback_needs_enough_samples_and_ignores_missing_reports() -> None:
    few = {"paired": {"samples": 5, "both_right": 0, "ml_only": 0}, "winner": None,
           "verdict": "", "model_version": "v", "config": {}, "trusted_older_backups": 1}
    assert fallback_decision({"a": few, "b": None})["action"] == "none"
    many = {**few, "paired": {"samples": 40, "both_right": 20, "ml_only": 0}}
    decision = fallback_decision({"a": many}, min_accuracy=0.75, min_samples=20)
    assert decision["action"] == "rollback" and "0.500 < 0.75 on 40" in decision["reasons"][0]
    # unset floor: the labeler's critical live accuracy (hmm 0.55), not a fixed 0.75
    assert fallback_decision({"a": {**many, "labeler": "hmm"}})["action"] == "rollback"
    fine = {**many, "labeler": "hmm", "paired": {"samples": 40, "both_right": 24, "ml_only": 0}}
    assert fallback_decision({"a": fine})["action"] == "none"  # 0.600 >= 0.55
    # no backup to return to, the rules worse than the model elsewhere: never serve them
    no_backup = {**many, "trusted_older_backups": 0}
    better = {**few, "winner": "ml", "trusted_older_backups": 0}
    decision = fallback_decision({"a": no_backup, "b": better}, 0.75)
    assert decision["action"] == "none" and "not switching" in decision["reasons"][-1]
    assert fallback_decision({"a": no_backup}, 0.75)["action"] == "serve-rules"


def test_ab_cli_refuses_bad_input_with_usage_errors(store_root: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cases = [(["ab", "replay"], "needs --from DATE and --to DATE"),
             (["ab", "replay", "--from", "1990-01-01", "--to", "1990-12-31"],
              "no bars between"),
             (["ab", "replay", "--from", "2001-01-01", "--to", "2001-06-30"],
              "full window of bars before --from, and the first is 2002-02-13"),
             (["ab", "replay", "--from", "2008-01-01", "--to", "2008-02-01", "--split", "2"],
              "split must be within 0..1"),
             (["ab", "replay", "--from", "2008-13-01", "--to", "2008-12-31"],
              "must be dates YYYY-MM-DD"),
             (["ab", "replay", "--from", "2008-06-01", "--to", "2008-01-01"], "is after --to"),
             (["ab", "replay", "--from", "2019-06-01", "--to", "2019-12-31"],
              "no bars between"),
             (["ab", "mark"], "needs --reason"),
             (["ab", "fallback"], "exactly one of --arm ARM or --clear"),
             (["ab", "fallback", "--arm", "rules", "--clear"], "exactly one of")]
    for argv, message in cases:
        assert main([*argv, "--root", str(store_root), "--json"]) == 2, argv
        out = json.loads(capsys.readouterr().out)
        assert message in out["error"], (argv, out)
    assert not (store_root / ab.OVERRIDE_FILE).exists()  # nothing written


def test_the_rules_arm_is_the_old_rule_on_every_bundled_bar() -> None:
    from quantshift_ml.model.labels import RulesLabeler

    f = compute_features(BundledSource().load()).dropna(subset=["atr_ratio", "sma50_slope"])
    expected = RulesLabeler().predict_from_features(f)
    ours = [ab.rules_regime(a, s) for a, s in zip(f["atr_ratio"], f["sma50_slope"],
                                                  strict=True)]
    assert ours == list(expected) and len(set(ours)) == 5
