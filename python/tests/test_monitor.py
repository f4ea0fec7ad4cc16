"""quantshift-ml monitor: Nagios exit codes, JSON, textfile, live accuracy, daily log."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from quantshift_ml.cli.dispatch import main
from quantshift_ml.data import BundledSource
from quantshift_ml.model.features import compute_features
from quantshift_ml.model.labels import HmmLabeler
from quantshift_ml.ops import operations
from quantshift_ml.serving import predlog
from quantshift_ml.store import ModelStore, signing

from .conftest import FAST, OPEN


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mon")
    for as_of in ("2017-06-30", "2017-12-29", "2018-06-29", "2018-12-31"):
        operations.train(BundledSource(), root=root, config=FAST, gate=OPEN, promote=True,
                         as_of=as_of)
    return root


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _age(root: Path, days: float) -> None:
    meta_path = root / "models/regime_classifier.json"
    meta = json.loads(meta_path.read_text())
    meta["trained_at"] = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)).isoformat()
    # re-signed with the fleet key, as the training host would have signed an older model
    meta_path.write_text(json.dumps(signing.Keyring.default().sign(meta)))


NO_DRIFT = json.dumps({"drift_days": 0, "importance_rank_warn": -1.0,
                       "importance_rank_crit": -1.0, "importance_top_changes": 99,
                       "live_excess_warn": -1.0})


def _monitor(capsys: pytest.CaptureFixture[str], root: Path, *extra: str) -> tuple[int, dict]:
    """The monitor with the drift checks out of the way: the bundled data end in December
    2018, a real input drift (CRITICAL), and the fixture's versions six months apart move
    the importances; both are tested in test_explain_drift and would mask the status of
    the checks tested here. So is live_outcomes' money warning (test_outcome_checks): the
    fixture's "right" answers are settled states with the unsettled December filled as
    Bull, long through December 2018's fall."""
    code = main(["monitor", "--root", str(root), "--json", "--thresholds-json", NO_DRIFT,
                 *extra])
    return code, json.loads(capsys.readouterr().out)


def _status(report: dict, name: str) -> str:
    return next(c["status"] for c in report["checks"] if c["name"] == name)


def test_fresh_model_is_ok_with_textfile_and_log(trained: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    prom = tmp_path / "qs.prom"
    code, rep = _monitor(capsys, root, "--textfile", str(prom))
    assert code == 0 and rep["status"] == "OK", rep
    assert _status(rep, "live_accuracy") == "UNKNOWN"  # no predictions logged: no number
    text = prom.read_text()
    assert 'quantshift_model_status{host="' in text and "quantshift_backups" in text
    assert list((root / "logs").glob("model-monitoring-*.log"))


def _promtool(text: str) -> str:
    """``promtool check metrics`` on ``text``: its complaints (empty when clean)."""
    import shutil
    import subprocess

    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not installed (Debian package prometheus); CI installs it")
    run = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=60, check=False)
    return (run.stdout + run.stderr).strip() if run.returncode else ""


def test_textfile_is_clean_under_promtool(trained: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The real monitor's textfile, and one with every gauge (drift per feature, A/B per
    arm, a host name that needs escaping), pass promtool's lint with HELP and TYPE."""
    from prometheus_client.parser import text_string_to_metric_families

    from quantshift_ml.monitoring.textfile import textfile

    root = _copy(trained, tmp_path / "r")
    prom = tmp_path / "qs.prom"
    main(["monitor", "--root", str(root), "--json", "--textfile", str(prom)])
    capsys.readouterr()
    full = textfile({"host": 'odd"host\\1', "status": "CRITICAL", "checks": [
        {"name": "age_days", "value": 2.5}, {"name": "holdout_accuracy", "value": 0.8},
        {"name": "live_accuracy", "value": 0.6}, {"name": "backups", "value": 3},
        {"name": "disk_free", "value": 0.4}, {"name": "importance_drift", "value": 0.7},
        {"name": "input_drift", "value": 0.25, "features": [
            {"feature": "rsi", "psi": 0.12, "ks": 0.2}, {"feature": "macd", "psi": 0.3,
                                                         "ks": 0.05}]},
        {"name": "ab_test", "value": 0.03, "ab": {"p_value": 0.03, "arms": {
            "ml": {"accuracy": 0.61, "samples": 40}, "rules": {"accuracy": None,
                                                               "samples": 0}}}}]})
    for text in (prom.read_text(), full):
        assert _promtool(text) == "", text
    families = {f.name: f for f in text_string_to_metric_families(full)}
    assert len(families) == 14 and all(f.documentation and f.type == "gauge"
                                       for f in families.values())
    psi = {s.labels["feature"]: s.value for s in families["quantshift_input_drift_psi"].samples}
    assert psi == {"rsi": 0.12, "macd": 0.3}
    assert [s.labels for s in families["quantshift_ab_accuracy"].samples] == [
        {"host": 'oddhost\\1', "arm": "ml"}]  # quotes dropped as before, backslash escaped
    status = families["quantshift_model_status"].samples[0]
    assert status.value == 2 and families["quantshift_model_age_seconds"].samples[0].value \
        == 2.5 * 86400


def test_31_day_old_model_warns(trained: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    _age(root, 31)
    code, rep = _monitor(capsys, root)
    assert code == 1 and _status(rep, "age_days") == "WARNING"


def test_46_day_old_model_is_critical(trained: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    _age(root, 46)
    code, rep = _monitor(capsys, root)
    assert code == 2 and _status(rep, "age_days") == "CRITICAL"


def test_tampered_model_is_critical(trained: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    pkl = root / "models/regime_classifier.pkl"
    data = bytearray(pkl.read_bytes())
    data[-10] ^= 0xFF
    pkl.write_bytes(bytes(data))
    code, rep = _monitor(capsys, root)
    assert code == 2 and _status(rep, "integrity") == "CRITICAL"


def test_missing_model_is_critical(trained: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    (root / "models/regime_classifier.pkl").unlink()
    code, rep = _monitor(capsys, root)
    assert code == 2 and _status(rep, "integrity") == "CRITICAL"


def test_missing_store_is_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, rep = _monitor(capsys, tmp_path / "nothing")
    assert code == 3 and rep["status"] == "UNKNOWN"


def _active_version(root: Path) -> str:
    return str(json.loads((root / "models/regime_classifier.json").read_text())["version"])


def _log_predictions(root: Path, wrong: bool, n: int = 60, version: str | None = None) -> None:
    """n predictions of the newest bars; the last 20 are not settled (hmm), 40 are scored.

    Logged as the active model's (``version`` unset): only its samples are judged.
    """
    version = version or _active_version(root)
    bars = BundledSource().load()
    labels = HmmLabeler().label(bars, compute_features(bars)).iloc[-n:].fillna("Bull")
    other = {"Bull": "Bear", "Bear": "Bull", "High Vol": "Low Vol", "Low Vol": "Crisis",
             "Crisis": "Bull"}
    for day, real in labels.items():
        regime = other[real] if wrong else real
        predlog.append(root, predlog.Prediction(
            ts=f"{day.date()}T21:00:00+00:00", symbol="SPY", bar_date=str(day.date()),
            regime=regime, probabilities={regime: 1.0}, model_version=version))


def test_low_live_accuracy_is_critical(trained: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    _log_predictions(root, wrong=True)
    code, rep = _monitor(capsys, root)
    live = next(c for c in rep["checks"] if c["name"] == "live_accuracy")
    assert code == 2 and live["status"] == "CRITICAL" and live["value"] == 0.0
    assert "over 40 predictions" in live["message"]
    version = _active_version(root)
    assert live["model_version"] == version and live["samples"] == 40
    assert live["by_version"] == {version: {"samples": 40, "hits": 0, "pending": 20,
                                            "not_in_data": 0, "requests": 60, "accuracy": 0.0}}


def test_good_live_accuracy_is_scored(trained: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    _log_predictions(root, wrong=False)
    code, rep = _monitor(capsys, root)
    live = next(c for c in rep["checks"] if c["name"] == "live_accuracy")
    assert code == 0 and live["value"] == 1.0


def test_after_a_rollback_the_old_versions_samples_do_not_count(
        trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Auto-rollback cannot repeat itself on the evidence that triggered it."""
    root = _copy(trained, tmp_path / "r")
    bad = _active_version(root)
    _log_predictions(root, wrong=True)
    assert _monitor(capsys, root)[0] == 2
    ModelStore(root).rollback("latest")  # what monitor.yml's auto-rollback ends in
    restored = _active_version(root)
    assert restored != bad
    code, rep = _monitor(capsys, root)
    live = next(c for c in rep["checks"] if c["name"] == "live_accuracy")
    assert live["status"] == "UNKNOWN" and live["value"] is None and code != 2, rep
    assert live["model_version"] == restored and live["samples"] == 0
    assert live["by_version"][bad]["samples"] == 40  # still shown, not counted
    assert "40 samples of other versions not counted" in live["message"]
    _log_predictions(root, wrong=False, version=restored)  # the restored model's own record
    code, rep = _monitor(capsys, root)
    live = next(c for c in rep["checks"] if c["name"] == "live_accuracy")
    assert live["status"] == "OK" and live["value"] == 1.0 and live["samples"] == 40


def test_repeated_requests_for_one_bar_cannot_make_live_accuracy_critical(
        trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    _log_predictions(root, wrong=False)
    for _ in range(60):  # a client (or a service stuck on stale data) asking about one bar
        predlog.append(root, predlog.Prediction(
            ts="2018-12-31T21:00:00+00:00", symbol="SPY", bar_date="2018-11-01",
            regime="Crisis", probabilities={"Crisis": 1.0}, model_version=_active_version(root)))
    code, rep = _monitor(capsys, root)
    live = next(c for c in rep["checks"] if c["name"] == "live_accuracy")
    assert code == 0 and live["value"] == 1.0 and live["samples"] == 40, live


def test_too_few_backups_warn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A first install keeps no backup yet: a WARNING that says so, never CRITICAL."""
    operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    code, rep = _monitor(capsys, tmp_path)
    backups = next(c for c in rep["checks"] if c["name"] == "backups")
    assert code == 1 and backups["status"] == "WARNING" and backups["value"] == 0
    assert backups["message"].startswith("no backups yet (want 3)"), backups


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_tampered_backup_is_a_warning_naming_it(trained: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 30: one of three backups corrupted no longer counts as a healthy one."""
    root = _copy(trained, tmp_path / "r")
    versions = [b.version for b in ModelStore(root).backups()]
    _flip(ModelStore(root).layout.backup_pkl(versions[1]))
    code, rep = _monitor(capsys, root)
    backups = next(c for c in rep["checks"] if c["name"] == "backups")
    assert code == 1 and backups["status"] == "WARNING" and backups["value"] == 2, backups
    assert f"backup {versions[1]} does not check out" in backups["message"]
    assert "does not match metadata" in backups["message"]
    assert [b["intact"] for b in backups["backups"]] == [True, False, True]


def test_no_intact_backup_left_is_critical(trained: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    store = ModelStore(root)
    for b in store.backups():
        meta = json.loads(b.pkl.with_suffix(".json").read_text())
        del meta["signature"]  # unsigned: no rollback would take any of them
        b.pkl.with_suffix(".json").write_text(json.dumps(meta))
    code, rep = _monitor(capsys, root)
    assert code == 2 and _status(rep, "backups") == "CRITICAL"
    message = next(c["message"] for c in rep["checks"] if c["name"] == "backups")
    assert message.startswith("no intact backup to roll back to") and "unsigned" in message


def test_old_daily_logs_are_pruned(trained: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    old = root / "logs/model-monitoring-20000101.log"
    old.write_text("old\n")
    _monitor(capsys, root)
    assert not old.exists()


FIRST_NIGHT_REASONS = {"backups", "input_drift"}
"""What a fresh install may warn about (docs/monitoring.md): no backup yet, and the
bundled data's last month (December 2018's fall) outside the model's range."""


def test_a_fresh_install_does_not_page_on_its_first_night(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`train --promote` on an empty root, then the monitor as cron runs it: 0 or 1, and
    a 1 names only documented reasons (it paged CRITICAL on input drift before)."""
    from quantshift_ml.training.gate import gate_for

    operations.train(BundledSource(), root=tmp_path, gate=gate_for("hmm"), promote=True)
    code = main(["monitor", "--root", str(tmp_path), "--json", "--textfile",
                 str(tmp_path / "data/quantshift.prom")])
    rep = json.loads(capsys.readouterr().out)
    raised = {c["name"]: c["message"] for c in rep["checks"] if c["status"] not in ("OK",
                                                                                      "UNKNOWN")}
    assert code in (0, 1) and rep["status"] != "CRITICAL", raised
    assert set(raised) <= FIRST_NIGHT_REASONS, raised
    if "input_drift" in raised:
        assert "only with an accuracy signal failing too" in raised["input_drift"]


def test_one_run_reads_the_data_labels_log_and_artifacts_once(
        trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check that needs them (live accuracy, live outcomes, input drift, A/B,
    importance drift, backups) shares one read: counted at the readers themselves, so
    a check that goes round the run context is caught, and in the report's ``reads``."""
    from quantshift_ml.model.labels import make_labeler
    from quantshift_ml.store import backups

    root = _copy(trained, tmp_path / "r")
    _log_predictions(root, wrong=False)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/ab.json").write_text(json.dumps({"enabled": True, "split": 0.5}))
    meta = json.loads((root / "models/regime_classifier.json").read_text())
    labeler_cls = type(make_labeler(meta["labeler"]["name"]))
    calls: dict[str, int] = {}

    def counted(name: str, owner: object, attr: str) -> None:
        real = getattr(owner, attr)

        def wrapper(*args: object, **kwargs: object) -> object:
            calls[name] = calls.get(name, 0) + 1
            return real(*args, **kwargs)
        monkeypatch.setattr(owner, attr, wrapper)

    counted("load", BundledSource, "load")
    counted("label", labeler_cls, "label")
    counted("log", predlog, "samples")
    counted("verify", ModelStore, "verify")
    counted("backup", backups, "check")
    code = main(["monitor", "--root", str(root), "--json"])
    rep = json.loads(capsys.readouterr().out)
    names = {c["name"] for c in rep["checks"]}
    assert {"live_accuracy", "live_outcomes", "input_drift", "ab_test", "importance_drift",
            "backups"} <= names and code in (0, 1, 2)
    n_backups = len(list((root / "models/backups").glob("*.pkl")))
    assert n_backups >= 2
    # each artifact verified once: the active model, then each backup (its check verifies)
    assert calls == {"load": 1, "label": 1, "log": 1, "verify": 1 + n_backups,
                     "backup": n_backups}, calls
    assert rep["reads"]["market_data"] == 1 and rep["reads"]["realised_labels"] == 1
    assert rep["reads"]["backups_verified"] == n_backups
    assert rep["reads"]["active_verified"] == 1
