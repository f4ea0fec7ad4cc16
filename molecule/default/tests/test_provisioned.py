"""State of each host after site.yml + retrain.yml (Molecule converge + side_effect)."""

from __future__ import annotations

import json
import os
import re
import time

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("quantshift")

ROOT = "/opt/quantshift"


def test_service_user(host) -> None:
    user = host.user("quantshift")
    assert user.exists and user.group == "quantshift"
    assert user.shell == "/usr/sbin/nologin"


def test_directory_modes(host) -> None:
    expected = {ROOT: 0o755, f"{ROOT}/models": 0o750, f"{ROOT}/models/backups": 0o750,
                f"{ROOT}/logs": 0o750, f"{ROOT}/data": 0o750, f"{ROOT}/etc": 0o750}
    for path, mode in expected.items():
        d = host.file(path)
        assert d.is_directory, path
        assert d.mode == mode, (path, oct(d.mode))
        assert d.user == "quantshift", path


def test_signing_key_on_the_primary_only_and_public_keys_everywhere(host) -> None:
    keys = "/etc/quantshift/keys"
    signing_key = host.file(f"{keys}/signing.key")
    if host.backend.get_hostname() == "primary":
        assert signing_key.exists and signing_key.mode == 0o640
        assert signing_key.user == "root" and signing_key.group == "quantshift"
    else:
        assert not signing_key.exists  # standbys never hold the private key
    pubs = host.check_output(f"ls {keys}/trusted").split()
    assert len(pubs) == 1 and pubs[0].endswith(".pub")
    assert host.file(f"{keys}/trusted").user == "root"  # the service user cannot add a key
    out = host.check_output(f"runuser -u quantshift -- {ROOT}/venv/bin/quantshift-ml verify "
                            f"--root {ROOT} --json")
    assert json.loads(out)["ok"]


def test_venv_imports_the_package_installed_offline(host) -> None:
    out = host.check_output(f"{ROOT}/venv/bin/python -c 'import quantshift_ml, sklearn;"
                            " print(quantshift_ml.__version__)'")
    assert out.strip()
    assert host.file(f"{ROOT}/wheelhouse").is_directory


def test_unit_enabled_and_active(host) -> None:
    svc = host.service("quantshift-regime")
    assert svc.is_enabled
    assert svc.is_running
    unit = host.file("/etc/systemd/system/quantshift-regime.service").content_string
    assert "NoNewPrivileges=yes" in unit and "ProtectSystem=strict" in unit


def test_monitoring_cron_line(host) -> None:
    cron = host.file("/etc/cron.d/quantshift-monitor")
    assert cron.exists
    text = cron.content_string
    assert "ADMIN_EMAIL=" in text and "SEND_EMAIL=" in text
    assert "0 18 * * * quantshift" in text and "quantshift-ml monitor" in text
    env = host.file(f"{ROOT}/etc/alerts.env")
    assert env.mode == 0o600 and env.user == "quantshift"


def test_active_model_matches_its_metadata(host) -> None:
    meta = json.loads(host.file(f"{ROOT}/models/regime_classifier.json").content_string)
    assert host.file(f"{ROOT}/models/regime_classifier.pkl").sha256sum == meta["sha256"]
    assert host.file(f"{ROOT}/models/regime_classifier.pkl").user == "quantshift"


def test_healthz_reports_the_active_sha(host) -> None:
    meta = json.loads(host.file(f"{ROOT}/models/regime_classifier.json").content_string)
    health = json.loads(host.check_output("curl -sf http://127.0.0.1:8787/healthz"))
    assert health["sha256"] == meta["sha256"]


def test_ab_arms_are_split_and_both_logged(host) -> None:
    """quantshift_ab_enabled in molecule.yml: 40 bots, both arms served, both answers logged
    (the prediction log is read with the host's own interpreter)."""
    ab = json.loads(host.file(f"{ROOT}/etc/ab.json").content_string)
    assert {k: ab[k] for k in ("enabled", "split", "primary")} == {
        "enabled": True, "split": 0.5, "primary": "economic"}
    # the fleet's outcome settings (playbooks/group_vars/all.yml), as the service reads them
    assert ab["outcomes"]["cost_bp"] == 5.0 and ab["outcomes"]["exposure"]["Bull"] == 1.0
    assert set(ab["outcomes"]["exposure"]) == {"Bull", "Bear", "High Vol", "Low Vol", "Crisis"}
    arms = []
    for i in range(40):
        body = json.loads(host.check_output(
            f"curl -sf 'http://127.0.0.1:8787/regime?client=molecule-{i}'"))
        arms.append(body["arm"])
        if body["arm"] == "rules":
            assert body["probabilities"][body["regime"]] == 1.0
    assert set(arms) == {"ml", "rules"}, arms
    query = ("select client, arm, ml_regime, rules_regime from predictions "
             "where client like 'molecule-%' order by rowid")
    cmd = (f"{ROOT}/venv/bin/python - <<'EOF'\nimport json, sqlite3\n"
           f"c = sqlite3.connect('{ROOT}/data/predictions.sqlite')\n"
           f"print(json.dumps(c.execute(\"{query}\").fetchall()))\nEOF")
    for _ in range(50):  # the service appends off the request path
        rows = json.loads(host.check_output(cmd))
        if len(rows) >= 40:
            break
        time.sleep(0.2)
    assert [r[1] for r in rows[-40:]] == arms
    assert all(r[2] and r[3] for r in rows[-40:])


def test_training_log_is_greppable_on_the_primary(host) -> None:
    if host.backend.get_hostname() != "primary":
        return
    out = host.check_output(f"grep -h 'Test Accuracy: ' {ROOT}/logs/model-training-*.log")
    assert re.search(r"^Test Accuracy: [01]\.\d{3}$", out, re.M), out


def test_monitor_cron_job_runs_as_installed(host) -> None:
    """Run the exact command cron would run, as the service user."""
    line = next(ln for ln in host.file("/etc/cron.d/quantshift-monitor").content_string
                .splitlines() if "quantshift-ml monitor" in ln)
    job = line.split(None, 6)[6]  # m h dom mon dow user command
    res = host.run("su -s /bin/sh quantshift -c %s", job)
    # OK or WARNING (e.g. fewer backups than wanted), or CRITICAL for input drift only:
    # the bundled data end in December 2018, a real drift (docs/monitoring.md)
    assert res.rc in (0, 1, 2), res.stderr
    log = host.check_output(f"cat {ROOT}/logs/model-monitoring-*.log")
    assert "integrity" in log and "sha256 matches metadata" in log
    critical = [ln for ln in log.splitlines() if ln.strip().startswith("CRITICAL")]
    assert all("input_drift" in ln for ln in critical), log
    assert "importance_drift" in log and "input_drift" in log
    assert host.file(f"{ROOT}/etc/monitor.json").exists  # the fleet's thresholds
    prom = host.file(f"{ROOT}/data/quantshift.prom")
    assert prom.exists and "quantshift_model_status" in prom.content_string
