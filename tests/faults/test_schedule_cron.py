"""schedule.yml installs the control node's jobs for real: the weekly retrain, and the
daily A/B guard only while A/B testing is on (removed again when it is turned off)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import BIN, ENV, REPO

CRON_DIR = Path("/etc/cron.d")
FILES = ("quantshift-retrain", "quantshift-ab-guard")


def _schedule(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(ENV)
    if shutil.which("crontab") is None:  # the cron module looks it up, never runs it here
        stub = tmp_path / "bin/crontab"
        stub.parent.mkdir(exist_ok=True)
        stub.write_text("#!/bin/sh\nexit 1\n")
        stub.chmod(0o755)
        env["PATH"] = f"{stub.parent}:{env['PATH']}"
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "playbooks/schedule.yml",
         "-e", f"quantshift_retrain_log={tmp_path / 'retrain.log'}", *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="the role writes /etc/cron.d: needs root")
def test_ab_guard_cron_follows_quantshift_ab_enabled(tmp_path: Path) -> None:
    CRON_DIR.mkdir(exist_ok=True)
    saved = {f: (CRON_DIR / f).read_bytes() for f in FILES if (CRON_DIR / f).exists()}
    try:
        run = _schedule(tmp_path, "-e", "quantshift_ab_enabled=true")
        assert run.returncode == 0, run.stdout + run.stderr
        guard = (CRON_DIR / "quantshift-ab-guard").read_text()
        assert "30 21 * * * root" in guard and "playbooks/ab_guard.yml" in guard
        assert f"cd {REPO} &&" in guard
        assert "playbooks/retrain.yml" in (CRON_DIR / "quantshift-retrain").read_text()
        again = _schedule(tmp_path, "-e", "quantshift_ab_enabled=true")
        assert "changed=0" in again.stdout, again.stdout
        off = _schedule(tmp_path)
        assert off.returncode == 0, off.stdout + off.stderr
        assert "playbooks/ab_guard.yml" not in (
            (CRON_DIR / "quantshift-ab-guard").read_text()
            if (CRON_DIR / "quantshift-ab-guard").exists() else "")
    finally:
        for f in FILES:
            if f in saved:
                (CRON_DIR / f).write_bytes(saved[f])
            else:
                (CRON_DIR / f).unlink(missing_ok=True)
