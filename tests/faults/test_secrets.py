"""Secrets are never printed: role quantshift_cron applied for real with alert secrets.

A throw-away playbook maps the site-level alert variables onto the role with
the mapping read from playbooks/site.yml itself, and is run at -vvv with --diff (a superset of -v)
and an Ansible log file. The secrets must appear in ROOT/etc/alerts.env (mode
0600) and nowhere else: not on stdout/stderr, not in the log, not in the cron
file, not in any other file the run touched.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import BIN, ENV, REPO

SMTP_PASSWORD = "S3CRETpw"
WEBHOOK = "https://hooks.example.invalid/SECRET123"
SECRETS = (SMTP_PASSWORD, WEBHOOK, "SECRET123")
CRON_FILE = Path("/etc/cron.d/quantshift-monitor")

ALERT_VARS = ("quantshift_cron_admin_email", "quantshift_cron_send_email",
              "quantshift_cron_smtp_", "quantshift_cron_slack_", "quantshift_cron_discord_")


def _site_alert_mapping() -> dict[str, object]:
    """The alert variables exactly as playbooks/site.yml hands them to the role."""
    for play in yaml.safe_load((REPO / "playbooks/site.yml").read_text()):
        for role in play.get("roles", []):
            if isinstance(role, dict) and role.get("role") == "quantshift_cron":
                return {k: v for k, v in role["vars"].items() if k.startswith(ALERT_VARS)}
    raise AssertionError("site.yml does not apply quantshift_cron")


def _playbook() -> str:
    role_vars = {
        "quantshift_cron_jobs": ["monitor"],
        "quantshift_cron_root": "{{ qs_root }}",
        "quantshift_cron_venv": "{{ qs_venv }}",
        "quantshift_cron_user": "{{ qs_user }}",
        **_site_alert_mapping(),
    }
    return yaml.safe_dump([{
        "name": "Apply the monitoring cron with alert secrets",
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        # the role's defaults derive from the fleet variables, as in the fleet's playbooks
        "vars_files": [str(REPO / "playbooks/group_vars/all.yml")],
        "roles": [{"role": "quantshift_cron", "vars": role_vars}],
    }])


@pytest.mark.skipif(os.geteuid() != 0, reason="the role writes /etc/cron.d: needs root")
def test_secrets_only_reach_alerts_env(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (tmp_path / "site.yml").write_text(_playbook())
    log = tmp_path / "ansible.log"
    env = {**ENV, "ANSIBLE_LOG_PATH": str(log)}
    if shutil.which("crontab") is None:
        # ansible.builtin.cron insists on finding crontab(1) but never runs it for a
        # cron_file (it edits /etc/cron.d directly); a stub satisfies the lookup
        stub = tmp_path / "bin/crontab"
        stub.parent.mkdir()
        stub.write_text("#!/bin/sh\nexit 1\n")
        stub.chmod(0o755)
        env["PATH"] = f"{stub.parent}:{env['PATH']}"
    saved = CRON_FILE.read_bytes() if CRON_FILE.exists() else None
    try:
        proc = subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", "localhost,", str(tmp_path / "site.yml"),
             "-vvv", "--diff",
             "-e", f"ansible_python_interpreter={BIN / 'python'}",
             "-e", f"qs_root={root}", "-e", f"qs_venv={BIN.parent}",
             "-e", f"qs_user={pwd.getpwuid(os.getuid()).pw_name}",
             "-e", f"quantshift_slack_webhook_url={WEBHOOK}",
             "-e", "quantshift_admin_email=ops@example.invalid", "-e", "quantshift_send_email=true",
             "-e", f"quantshift_smtp_password={SMTP_PASSWORD}",
             "-e", '{"quantshift_smtp_host": "relay.example.invalid", "quantshift_smtp_port": 587,'
                   ' "quantshift_smtp_user": "bot", "quantshift_smtp_starttls": true,'
                   ' "quantshift_smtp_ca_file": "/etc/ssl/relay-ca.pem"}'],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output
        cron = CRON_FILE.read_text()
    finally:
        if saved is None:
            CRON_FILE.unlink(missing_ok=True)
        else:
            CRON_FILE.write_bytes(saved)

    alerts = root / "etc/alerts.env"
    text = alerts.read_text()
    assert f"SMTP_PASSWORD={SMTP_PASSWORD}" in text and f"SLACK_WEBHOOK_URL={WEBHOOK}" in text
    assert stat.S_IMODE(alerts.stat().st_mode) == 0o600
    for line in ("SMTP_HOST=relay.example.invalid", "SMTP_PORT=587", "SMTP_USER=bot",
                 "SMTP_STARTTLS=true", "SMTP_CA_FILE=/etc/ssl/relay-ca.pem"):
        assert line in text.splitlines(), (line, text)
    assert "alerts.env" in cron and "quantshift-ml monitor" in cron  # the role did run

    for secret in SECRETS:
        assert secret not in output, f"{secret!r} printed"
        assert secret not in log.read_text(), f"{secret!r} in the Ansible log"
        assert secret not in cron, f"{secret!r} in {CRON_FILE}"
        leaked = [str(p) for p in tmp_path.rglob("*")
                  if p.is_file() and p != alerts and secret.encode() in p.read_bytes()]
        assert leaked == [], f"{secret!r} in {leaked}"
    assert "censored" in output  # no_log did hide the template task's result
