"""End-to-end test of testbed.py: boot one real host, use it, remove it.

Why: every Molecule scenario depends on this tool, and its worst failure is
silent: a process, namespace, veth or mount left behind breaks the next run
(or the next CI job on the same machine). So the test checks not only that a
host boots and answers over ssh, but that ``down`` leaves nothing behind.

It needs root plus systemd-nspawn, debootstrap, ip and ssh; the first run
builds the cached rootfs (a few minutes). Uses its own state dir and index 59
so it never touches hosts a Molecule run may have up, and checks only its
own host's traces (``check-clean --host --index``): other hosts on the same
machine, such as a running deploy benchmark, must not fail it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TESTBED = Path(__file__).with_name("testbed.py")
NAME = "selftest"
INDEX = 59

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="testbed.py needs root (network namespaces, veth links, systemd-nspawn)",
    ),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("systemd-nspawn", "debootstrap", "ip", "ssh")),
        reason="needs the packages in molecule/shared/apt-packages.txt",
    ),
]


def run_testbed(state: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run testbed.py with an isolated state dir and the shared rootfs cache."""
    return subprocess.run(
        [sys.executable, str(TESTBED), *args],
        env={**os.environ, "QS_TESTBED_STATE": str(state)},
        capture_output=True,
        text=True,
        check=check,
        timeout=1800,
    )


def ssh(config: dict[str, object], state: Path, *remote: str) -> str:
    """Run a command on the test host as Molecule/Ansible would, over ssh."""
    known = state / "hosts" / NAME / "known_hosts"
    proc = subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(config["identity_file"]),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known}",
            "-p",
            str(config["port"]),
            f"{config['user']}@{config['address']}",
            *remote,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return proc.stdout.strip()


def test_up_ssh_down_leaves_nothing(tmp_path: Path) -> None:
    """One host: boots with systemd, answers ssh, then vanishes completely."""
    state = tmp_path / "state"
    try:
        up = run_testbed(state, "up", NAME, str(INDEX))
        config = json.loads(up.stdout)
        assert config == {
            "instance": NAME,
            "address": f"10.231.{INDEX}.2",
            "user": "root",
            "port": 22,
            "identity_file": str((state / "id_ed25519").resolve()),
            "connection": "ssh",
        }
        assert ssh(config, state, "hostname") == NAME
        assert ssh(config, state, "cat", "/proc/1/comm") == "systemd"
        assert ssh(config, state, "systemctl", "is-active", "ssh", "cron") == "active\nactive"

        # A second `up` of a running host is a no-op that returns the same config.
        again = run_testbed(state, "up", NAME, str(INDEX))
        assert json.loads(again.stdout) == config
        assert "already running" in again.stderr

        listed = json.loads(run_testbed(state, "list").stdout)
        assert [(h["name"], h["status"]) for h in listed] == [(NAME, "running")]

        # A scoped check sees this host's traces and ignores other hosts.
        mine = run_testbed(state, "check-clean", "--host", NAME, "--index", str(INDEX), check=False)
        assert mine.returncode == 1
        assert f"namespace: qs-{NAME}" in mine.stdout and f"link: qs-h{INDEX}" in mine.stdout
        other = run_testbed(
            state, "check-clean", "--host", "not-" + NAME, "--index", str(INDEX + 1), check=False
        )
        assert other.returncode == 0, other.stdout
    finally:
        run_testbed(state, "down", NAME)

    # down is idempotent, and nothing is left behind.
    run_testbed(state, "down", NAME)
    clean = run_testbed(state, "check-clean", "--host", NAME, "--index", str(INDEX), check=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert not (state / "hosts" / NAME).exists()
    assert not Path(f"/run/netns/qs-{NAME}").exists()
    assert not Path(f"/sys/class/net/qs-h{INDEX}").exists()


def test_a_failed_or_killed_boot_leaves_nothing_the_next_up_cannot_clear(tmp_path: Path) -> None:
    """A boot that fails cleans up after itself; one killed mid-boot is cleared by the next up.

    Why: a Molecule run killed by CI's timeout (or an operator's ^C) must not
    leave a namespace, veth, overlay or container that blocks the next run.
    """
    state = tmp_path / "state"
    scoped = ("check-clean", "--host", NAME, "--index", str(INDEX))
    try:
        # 1. A boot that cannot be ready in time: up fails and removes what it made.
        failed = run_testbed(state, "up", NAME, str(INDEX), "--timeout", "0.01", check=False)
        assert failed.returncode != 0 and f"up {NAME} failed" in failed.stderr, failed.stderr
        clean = run_testbed(state, *scoped, check=False)
        assert clean.returncode == 0, clean.stdout
        assert not (state / "hosts" / NAME).exists()

        # 2. The same failure kept for inspection, then its nspawn killed like a
        #    crashed run: namespace, link and host dir stay behind...
        kept = run_testbed(state, "up", NAME, str(INDEX), "--timeout", "0.01",
                           "--keep-on-failure", check=False)
        assert kept.returncode != 0 and "leaving" in kept.stderr, kept.stderr
        pid = json.loads((state / "hosts" / NAME / "host.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        dirty = run_testbed(state, *scoped, check=False)
        assert dirty.returncode == 1 and f"namespace: qs-{NAME}" in dirty.stdout, dirty.stdout

        # 3. ...and the next up clears them and boots a working host.
        up = run_testbed(state, "up", NAME, str(INDEX))
        assert "cleaning up leftovers" in up.stderr, up.stderr
        config = json.loads(up.stdout)
        assert ssh(config, state, "hostname") == NAME
    finally:
        run_testbed(state, "down", NAME)
    clean = run_testbed(state, *scoped, check=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr


def test_refuses_bad_arguments(tmp_path: Path) -> None:
    """Names become hostnames and interfaces; indexes become addresses."""
    state = tmp_path / "state"
    bad_index = run_testbed(state, "up", "ok-name", "61", check=False)
    assert bad_index.returncode != 0
    assert "out of range" in bad_index.stderr
    bad_name = run_testbed(state, "up", "Bad_Name", "5", check=False)
    assert bad_name.returncode != 0
    assert "invalid host name" in bad_name.stderr
