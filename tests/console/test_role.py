"""The quantshift_console role: env file and unit, idempotent; plain passwords refused."""

from __future__ import annotations

import getpass
import json
import stat
import subprocess
from pathlib import Path

import yaml

from quantshift_ml.cli.dispatch import build_parser
from quantshift_ml.console.auth import hash_password
from quantshift_ml.console.config import load
from tests.console.conftest import BIN, REPO, LocalFleet


def play(tmp_path: Path, users: dict[str, str], **more: object
         ) -> subprocess.CompletedProcess[str]:
    extra = {**more, "quantshift_console_manage_service": False,
             "quantshift_console_env_file": str(tmp_path / "etc" / "console.env"),
             "quantshift_console_unit_dir": str(tmp_path), "quantshift_console_users": users,
             "quantshift_console_secret": "vault-secret", "quantshift_console_port": 8799,
             "quantshift_console_run_as": getpass.getuser()}
    return subprocess.run([str(BIN / "ansible-playbook"), "playbooks/console.yml", "-e",
                           json.dumps(extra)], cwd=REPO, env=LocalFleet(tmp_path).env(),
                          capture_output=True, text=True, timeout=300, check=False)


def test_role_writes_a_private_env_file_and_the_unit(tmp_path: Path) -> None:
    stored = hash_password("pw")
    first = play(tmp_path, {"alice": stored})
    assert first.returncode == 0, first.stdout[-2000:]
    env = tmp_path / "etc" / "console.env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert f"QUANTSHIFT_CONSOLE_USER_alice={stored}" in env.read_text()
    assert "QUANTSHIFT_CONSOLE_SECRET=vault-secret" in env.read_text()
    assert "vault-secret" not in first.stdout and stored not in first.stdout  # no_log
    unit = (tmp_path / "quantshift-console.service").read_text()
    assert "bin/quantshift-ml console --project " in unit and "--port 8799" in unit
    assert f"--env-file {env}" in unit
    fleet = yaml.safe_load((REPO / "playbooks/group_vars/all.yml").read_text())
    assert fleet["quantshift_console_idle_minutes"] == 30  # the fleet's value reaches the unit
    assert unit.split("ExecStart=")[1].splitlines()[0].split()[-2:] == ["--idle-minutes", "30"]
    again = play(tmp_path, {"alice": stored})
    assert again.returncode == 0 and "changed=0" in again.stdout


def test_the_idle_timeout_follows_the_fleet_variable(tmp_path: Path) -> None:
    """Set once for the fleet, the unit passes it, and the console started that way reads it."""
    stored = hash_password("pw")
    proc = play(tmp_path, {"alice": stored}, quantshift_console_idle_minutes=12)
    assert proc.returncode == 0, proc.stdout[-2000:]
    unit = (tmp_path / "quantshift-console.service").read_text()
    argv = unit.split("ExecStart=")[1].splitlines()[0].split()
    assert argv[argv.index("--idle-minutes") + 1] == "12"
    args = build_parser().parse_args(argv[1:])  # the console's own parser takes the line
    assert args.idle_minutes == 12.0
    config = load(args.project, args.inventory, args.env_file, args.state,
                  artifacts=tmp_path / "artifacts", idle=args.idle_minutes)
    assert config.idle_minutes == 12.0 and set(config.users) == {"alice"}
    bad = play(tmp_path / "bad", {"alice": stored}, quantshift_console_idle_minutes="soon")
    assert bad.returncode != 0 and "quantshift_console_session_idle_minutes" in bad.stdout


def test_role_refuses_a_plain_password(tmp_path: Path) -> None:
    proc = play(tmp_path, {"alice": "hunter2"})
    assert proc.returncode != 0
    assert "never to a password" in proc.stdout and "hunter2" not in proc.stdout
    assert not (tmp_path / "etc" / "console.env").exists()
