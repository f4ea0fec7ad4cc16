"""site + retrain + rollback + a refused gate against inventory/local, asserted on files.

The tests run in order and share one fleet, like an operator's day.
"""

from __future__ import annotations

import json
import re

from .conftest import Fleet

# a floor the candidate cannot reach: on a 2011 holdout (August's turbulence) no
# model scores 0.99, while the bundled data's last holdout is too easy (1.000)
REFUSE = ("-e", "quantshift_min_accuracy=0.99", "-e", "quantshift_as_of=2011-10-31")

HOSTS = ("primary", "standby")
# The drift checks out of the way, for the tests of the other checks: the bundled data
# end in December 2018, a real input drift (test_monitor_reports_the_december_2018_drift).
NO_DRIFT = ("-e", json.dumps({"quantshift_monitor_thresholds": {
    "drift_days": 0, "importance_rank_warn": -1.0, "importance_rank_crit": -1.0,
    "importance_top_changes": 99}}))


def test_site_twice_second_run_changes_nothing(fleet: Fleet) -> None:
    first = fleet.play("site.yml")
    assert first.rc == 0, first.out
    second = fleet.play("site.yml")
    assert second.rc == 0, second.out
    assert all(c["changed"] == 0 for c in second.recap().values()), second.out
    for h in HOSTS:
        assert (fleet.root(h) / "models/backups").is_dir()


def test_check_mode_retrain_changes_nothing(fleet: Fleet) -> None:
    before = fleet.digest()
    run = fleet.play("retrain.yml", "--check")
    assert run.rc == 0, run.out
    assert "would deploy" in run.out
    assert fleet.digest() == before


def test_retrain_puts_both_hosts_on_the_candidate(fleet: Fleet) -> None:
    run = fleet.play("retrain.yml")
    assert run.rc == 0, run.out
    assert "gate PASSED" in run.out
    metas = [fleet.meta(h) for h in HOSTS]
    assert metas[0]["sha256"] == metas[1]["sha256"]
    for h in HOSTS:
        assert fleet.active_sha(h) == fleet.meta(h)["sha256"]
    log = fleet.root("primary") / "logs" / f"model-training-{metas[0]['version']}.log"
    assert "Test Accuracy: " in log.read_text()


def test_second_retrain_makes_a_new_version_and_keeps_a_backup(fleet: Fleet) -> None:
    old = fleet.meta("primary")
    run = fleet.play("retrain.yml")
    assert run.rc == 0, run.out
    new = fleet.meta("primary")
    assert new["version"] != old["version"] and new["sha256"] != old["sha256"]
    for h in HOSTS:
        assert fleet.meta(h)["sha256"] == new["sha256"]
        backup = fleet.root(h) / f"models/backups/regime_classifier_{old['version']}.pkl"
        assert backup.exists()


def test_rollout_prunes_backups_beyond_keep_only_once_the_host_is_verified(fleet: Fleet) -> None:
    backups = sorted((fleet.root("primary") / "models/backups").glob("*.json"))
    oldest = json.loads(backups[0].read_text())
    previous = fleet.meta("primary")
    run = fleet.play("retrain.yml", "-e", "quantshift_backups_keep=1")
    assert run.rc == 0, run.out
    for h in HOSTS:
        kept = sorted(p.name for p in (fleet.root(h) / "models/backups").iterdir()
                      if p.name.startswith("regime_classifier_"))
        stem = f"regime_classifier_{previous['version']}"
        assert [k for k in kept if k.endswith((".pkl", ".json"))] == [f"{stem}.json", f"{stem}.pkl"]
        assert not any(oldest["version"] in k for k in kept)
    assert "Verify the host serves the release, then prune its old backups" in run.out


def test_rollback_puts_both_hosts_back_on_the_previous_sha(fleet: Fleet) -> None:
    current = fleet.meta("primary")
    backups = sorted((fleet.root("primary") / "models/backups").glob("*.json"))
    previous = json.loads(backups[-1].read_text())
    run = fleet.play("rollback.yml")
    assert run.rc == 0, run.out
    for h in HOSTS:
        assert fleet.active_sha(h) == previous["sha256"] != current["sha256"]


def test_refused_gate_changes_no_model_file_and_states_the_numbers(fleet: Fleet) -> None:
    before = fleet.digest()
    run = fleet.play("retrain.yml", *REFUSE)
    assert run.rc != 0
    assert "Deployment refused" in run.out and "floor 0.99" in run.out
    after = fleet.digest()
    added = set(after) - set(before)
    assert all(k.startswith("primary/logs/model-training-") for k in added), added
    assert {k: after[k] for k in before} == before


def test_concurrent_retrain_is_refused_by_the_lease(fleet: Fleet) -> None:
    lease = fleet.root("primary") / "models/.operation.lease"
    lease.write_text(json.dumps({"owner": "someone-else", "host": "ctl", "expires": 4e9}))
    try:
        before = fleet.digest()
        run = fleet.play("retrain.yml")
        assert run.rc != 0 and "another operation holds the lease" in run.out
        assert fleet.digest() == before
    finally:
        lease.unlink()


def test_retrain_refuses_a_broken_host_before_touching_any(fleet: Fleet) -> None:
    """The runbook's emergency cp on the standby: retrain names its state and changes
    nothing; the named fixes (doctor --repair on the host, then deploy.yml for the
    split it leaves) make the fleet retrainable again."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    standby = fleet.root("standby")
    backup = sorted((standby / "models/backups").glob("*.pkl"))[-1]
    shutil.copy(backup, standby / "models/regime_classifier.pkl")
    before = fleet.digest()
    run = fleet.play("retrain.yml")
    assert run.rc != 0 and "Retrain refused, no host was changed" in run.out, run.out
    assert "standby: active model is backup" in run.out and "copied by hand" in run.out
    assert fleet.digest() == before
    qs = Path(sys.executable).parent / "quantshift-ml"
    repaired = subprocess.run([str(qs), "doctor", "--repair", "--root", str(standby),
                               "--keys", str(fleet.base / "hosts/standby.keys")],
                              capture_output=True, text=True, check=False)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    # the standby now really runs that backup: the check names the split and its fix
    split = fleet.play("retrain.yml", "--check")
    version = max(fleet.meta(h)["version"] for h in HOSTS)  # the fix names the newest
    assert split.rc != 0 and f"quantshift_release_version={version}" in split.out, split.out
    assert fleet.play("deploy.yml", "-e", f"quantshift_release_version={version}").rc == 0
    assert fleet.play("retrain.yml", "--check").rc == 0


FROZEN = ("-e", "quantshift_freeze_enabled=true",
          "-e", "quantshift_freeze_at=2026-11-30T15:00:00Z")  # a Monday, 10:00 New York


def test_change_freeze_refuses_retrain_and_deploy_and_lets_rollback_through(fleet: Fleet) -> None:
    before = fleet.digest()
    run = fleet.play("retrain.yml", *FROZEN)
    out = " ".join(run.out.split())  # Ansible wraps long messages
    assert run.rc != 0, run.out
    assert "retrain refused, no host was changed: change freeze (XNYS session 2026-11-30" in out
    assert "until 2026-11-30T21:30:00+00:00" in out and "quantshift_force=true" in out
    version = fleet.meta("primary")["version"]
    run = fleet.play("deploy.yml", *FROZEN, "-e", f"quantshift_release_version={version}")
    assert run.rc != 0 and "deploy refused, no host was changed: change freeze" in " ".join(
        run.out.split())
    assert fleet.digest() == before
    run = fleet.play("rollback.yml", "--check", *FROZEN)
    assert run.rc == 0 and "WARNING: rollback inside a change freeze" in " ".join(
        run.out.split()), run.out
    run = fleet.play("retrain.yml", "--check", *FROZEN, "-e", "quantshift_force=true")
    assert run.rc == 0 and "overridden with quantshift_force" in " ".join(run.out.split()), run.out
    thanksgiving = ("-e", "quantshift_freeze_enabled=true",
                    "-e", "quantshift_freeze_at=2026-11-26T17:00:00Z")
    run = fleet.play("retrain.yml", "--check", *thanksgiving)
    assert run.rc == 0 and "WARNING: retrain inside a change freeze" not in run.out, run.out
    assert fleet.digest() == before


def test_schedule_inside_a_freeze_is_refused_before_cron_is_touched(fleet: Fleet) -> None:
    weekday_afternoon = '{"quantshift_retrain_schedule": {"minute": "30", "hour": "15", ' \
                        '"weekday": "1-5"}}'
    run = fleet.play("schedule.yml", "-e", "quantshift_freeze_enabled=true",
                     "-e", weekday_afternoon)
    out = " ".join(run.out.split())
    assert run.rc != 0 and "Schedule refused" in out and "inside a change freeze" in out, run.out
    assert "XNYS session" in out
    assert "Install the" not in out  # the cron role never ran


def test_status_prints_one_table(fleet: Fleet) -> None:
    run = fleet.play("status.yml")
    assert run.rc == 0, run.out
    assert "HOST" in run.out and "SHA_OK" in run.out
    assert run.out.count(fleet.meta("primary")["sha256"][:12]) >= 2


def test_deploy_an_artifact_from_the_controller(fleet: Fleet) -> None:
    versions = sorted(p.name for p in fleet.artifacts.iterdir())
    newest = versions[-1]
    meta = json.loads((fleet.artifacts / newest / f"regime_classifier_{newest}.json").read_text())
    run = fleet.play("deploy.yml", "-e", f"quantshift_release_version={newest}")
    assert run.rc == 0, run.out
    for h in HOSTS:
        assert fleet.active_sha(h) == meta["sha256"]


def test_deploy_refuses_a_tampered_controller_artifact(fleet: Fleet) -> None:
    versions = sorted(p.name for p in fleet.artifacts.iterdir())
    oldest = versions[0]
    pkl = fleet.artifacts / oldest / f"regime_classifier_{oldest}.pkl"
    data = bytearray(pkl.read_bytes())
    data[100] ^= 0x01
    pkl.write_bytes(bytes(data))
    before = fleet.digest()
    run = fleet.play("deploy.yml", "-e", f"quantshift_release_version={oldest}")
    assert run.rc != 0 and "does not match its metadata" in run.out
    assert fleet.digest() == before


def test_unhealthy_standby_is_restored_and_primary_never_touched(fleet: Fleet) -> None:
    """The service on the standby keeps reporting the old sha: the deploy loop must
    restore the standby byte for byte and stop before the primary."""
    import http.server
    import threading

    old_sha = fleet.meta("standby")["sha256"]

    class StaleHealth(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "ok", "sha256": old_sha}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StaleHealth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        before = fleet.digest()
        run = fleet.play("retrain.yml", "-e",
                         f"quantshift_service_url=http://127.0.0.1:{server.server_port}",
                         "-e", "quantshift_health_timeout=4")
    finally:
        server.shutdown()
    assert run.rc != 0
    assert "failed on standby" in run.out and "restored" in run.out
    # the failure says what the service answered, not only that it timed out
    assert "did not report sha256" in run.out and f"sha256 {old_sha[:12]}" in run.out
    after = fleet.digest()
    for key, sha in before.items():
        if "/staging/" in key or "/logs/" in key:
            continue
        assert after.get(key) == sha, key
    assert not [k for k in set(after) - set(before)
                if "/staging/" not in k and "/logs/" not in k]
    assert not (fleet.root("primary") / "models/.operation.lease").exists()


def test_monitor_prints_the_fleet_table(fleet: Fleet) -> None:
    run = fleet.play("monitor.yml", *NO_DRIFT)
    assert run.rc == 0, run.out
    assert "HOST" in run.out and "STATUS" in run.out and "no host is CRITICAL" in run.out


def test_monitor_fails_on_a_critical_host(fleet: Fleet) -> None:
    pkl = fleet.root("standby") / "models/regime_classifier.pkl"
    original = pkl.read_bytes()
    data = bytearray(original)
    data[-5] ^= 0xFF
    pkl.write_bytes(bytes(data))
    try:
        run = fleet.play("monitor.yml", *NO_DRIFT)
    finally:
        pkl.write_bytes(original)
    assert run.rc != 0
    assert "CRITICAL on standby" in run.out


def test_monitor_reports_the_december_2018_drift(fleet: Fleet) -> None:
    """Provisioned thresholds (site.yml -> ROOT/etc/monitor.json) and the playbook's own:
    the bundled data's last month, a 9 % fall, left the model's range: a WARNING with
    its reason, not a page (drift alone never is); relaxed thresholds silence it."""
    for host in HOSTS:
        assert json.loads((fleet.root(host) / "etc/monitor.json").read_text()) == {}
    run = fleet.play("monitor.yml")
    out = " ".join(run.out.split())  # the callback wraps long lines
    assert run.rc == 0 and "no host is CRITICAL" in out, run.out
    assert re.search(r"\d+/\d+ features novel over 2018-1[12]-\d\d\.\.2018-12-31 vs the "
                     r"model", out), run.out
    relaxed = fleet.play("monitor.yml", "-e", json.dumps({"quantshift_monitor_thresholds": {
        "drift_warn_share": 0.99, "drift_crit_share": 0.99}}))
    assert "features novel over" not in " ".join(relaxed.out.split()), relaxed.out


def test_monitor_auto_rollback_on_critical_live_accuracy(fleet: Fleet) -> None:
    """Predictions that were all wrong: live accuracy CRITICAL -> fleet rollback; the
    next monitor run judges the restored version on its own samples: no second rollback."""

    from quantshift_ml.data import BundledSource
    from quantshift_ml.model.features import compute_features
    from quantshift_ml.model.labels import HmmLabeler
    from quantshift_ml.serving import predlog

    bars = BundledSource().load()
    # the hmm labels of the last 20 bars are not settled: 50 logged, 30 scored
    labels = HmmLabeler().label(bars, compute_features(bars)).iloc[-50:].fillna("Bull")
    for day, real in labels.items():
        wrong = "Crisis" if real != "Crisis" else "Bull"
        predlog.append(fleet.root("standby"), predlog.Prediction(
            ts=f"{day.date()}T21:00:00+00:00", symbol="SPY", bar_date=str(day.date()),
            regime=wrong, probabilities={wrong: 1.0},
            model_version=fleet.meta("standby")["version"]))
    before = fleet.meta("primary")["sha256"]
    run = fleet.play("monitor.yml", "-e", "quantshift_auto_rollback=true")
    assert run.rc != 0  # still reported as CRITICAL
    assert "Verify, load and score the backup on fresh data" in run.out
    after = {h: fleet.meta(h)["sha256"] for h in HOSTS}
    assert after["primary"] == after["standby"] != before
    again = fleet.play("monitor.yml", "-e", "quantshift_auto_rollback=true")
    predlog.db_path(fleet.root("standby")).unlink()
    assert {h: fleet.meta(h)["sha256"] for h in HOSTS} == after, again.out


def test_ab_guard_rolls_back_once_when_the_model_is_worse_than_the_rules(fleet: Fleet) -> None:
    """A/B on (site.yml -> ROOT/etc/ab.json); both hosts logged 60 settled bars where the
    model was wrong and the rules right: ab_guard.yml rolls the fleet back (trusted older
    backups exist) and alerts; run again, the restored version has no record: nothing."""
    from quantshift_ml.data import BundledSource
    from quantshift_ml.insight.ab import AbConfig
    from quantshift_ml.model.features import compute_features
    from quantshift_ml.model.labels import HmmLabeler
    from quantshift_ml.serving import predlog

    assert fleet.play("retrain.yml").rc == 0  # a fresh version with older backups
    try:
        run = fleet.play("site.yml", "-e", "quantshift_ab_enabled=true")
        assert run.rc == 0, run.out
        for host in HOSTS:
            ab = json.loads((fleet.root(host) / "etc/ab.json").read_text())
            assert (ab["enabled"], ab["split"], ab["primary"]) == (True, 0.5, "economic")
            assert ab["outcomes"] == {  # the fleet's outcome settings, as native JSON
                "exposure": {"Bull": 1.0, "Low Vol": 1.0, "High Vol": 0.5, "Bear": 0.0,
                             "Crisis": 0.0}, "cost_bp": 5.0, "horizon": 20,
                "vol_quantile": 0.75, "drawdown_depth": 0.07}
            assert AbConfig.load(fleet.root(host)).primary == "economic"
        bars = BundledSource().load()
        labels = HmmLabeler().label(bars, compute_features(bars)).iloc[-80:-20]
        for host in HOSTS:
            for day, real in labels.items():
                predlog.append(fleet.root(host), predlog.Prediction(
                    f"{day.date()}T21:00:00+00:00", "SPY", str(day.date()), str(real),
                    {str(real): 1.0}, fleet.meta(host)["version"], arm="rules",
                    ml_regime="Crisis" if real != "Crisis" else "Bull",
                    rules_regime=str(real), client="bot"))
        before = fleet.meta("primary")["sha256"]
        run = fleet.play("ab_guard.yml")
        out = " ".join(run.out.split())
        assert run.rc == 0 and "A/B fallback: rollback" in out, run.out
        # quantshift_min_accuracy unset: the hmm labeler's critical live accuracy, 0.55
        assert "model accuracy 0.000 < 0.55 on 60 settled bars" in out, run.out
        after = {h: fleet.meta(h)["sha256"] for h in HOSTS}
        assert after["primary"] == after["standby"] != before
        again = fleet.play("ab_guard.yml")
        assert again.rc == 0 and "A/B fallback: none" in again.out, again.out
        assert {h: fleet.meta(h)["sha256"] for h in HOSTS} == after
    finally:
        for host in HOSTS:
            predlog.db_path(fleet.root(host)).unlink(missing_ok=True)
        assert fleet.play("site.yml").rc == 0  # A/B off again


def test_retrain_takes_forest_overrides_and_refuses_a_typo_before_training(fleet: Fleet) -> None:
    run = fleet.play("retrain.yml", "-e",
                     '{"quantshift_model_params": {"n_estimators": 150, "random_state": 3}}')
    assert run.rc == 0, run.out
    for h in HOSTS:
        model = fleet.meta(h)["params"]["model"]
        assert (model["n_estimators"], model["random_state"], model["max_features"]) == (
            150, 3, 0.5)
    # a weaker forest is refused by the gate against the production model, not deployed
    def models() -> dict[str, str]:  # a refused training still writes its log
        return {k: v for k, v in fleet.digest().items() if "/models/" in k}

    before = models()
    # (scored on a 2011 holdout: the data's last one is too easy, every model gets 1.000)
    run = fleet.play("retrain.yml", "-e", "quantshift_as_of=2011-10-31", "-e",
                     '{"quantshift_model_params": {"n_estimators": 2, "max_depth": 1}}')
    assert run.rc != 0 and "gate REFUSED" in run.out, run.out
    assert "worse than the incumbent" in run.out, run.out
    assert models() == before
    run = fleet.play("retrain.yml", "-e", '{"quantshift_model_params": {"max_featurs": 0.5}}')
    assert run.rc != 0
    assert "unknown Random Forest parameter 'max_featurs'" in run.out, run.out
    assert models() == before
