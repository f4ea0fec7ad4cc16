"""Controller killed mid-rollout, and what the fleet lease does about it.

``playbooks/tasks/lease.yml`` stores the controller's host and ansible-playbook
pid in the lease. A re-run from the same control node finds that pid gone and
takes the lease over at once (``lease_takeover``); a lease from another control
node is honoured until it expires (``quantshift_lease_ttl``, 2 h): this node
cannot prove that controller dead. ``-e quantshift_lease_ttl=0`` does not help:
the TTL is the expiry written into the *new* lease, the old one keeps its own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from quantshift_ml.errors import LockHeld
from quantshift_ml.store import lease as leases

from .conftest import HOSTS, Fleet, kill_group, meta, sha, wait_for


def _version(root: Path) -> str | None:
    try:
        return str(meta(root)["version"])
    except (OSError, ValueError, KeyError):
        return None


def test_controller_killed_after_the_standby_was_promoted_then_rerun_converges(
        fleet: Fleet) -> None:
    old = fleet.assert_one_version()
    primary, standby = fleet.root("primary"), fleet.root("standby")
    lease_file = primary / "models/.operation.lease"
    proc = fleet.popen("retrain.yml")
    try:
        wait_for(lambda: _version(standby) not in (None, old["version"]),
                 "the standby to be promoted", timeout=300, alive=proc)
        kill_group(proc)  # kill -9 the ansible-playbook process group, between hosts
    finally:
        if proc.poll() is None:
            kill_group(proc)
    assert proc.returncode == -9

    # the fleet is split, the dead controller's lease is left on the primary
    killed = meta(standby)
    assert killed["sha256"] != old["sha256"]
    assert meta(primary)["sha256"] == old["sha256"]
    held = json.loads(lease_file.read_text())
    assert int(held["controller_pid"]) == proc.pid
    assert not Path(f"/proc/{proc.pid}").exists()
    assert held["expires"] > time.time() + 3600  # by TTL it is still live

    # a retrain against the split fleet is refused before any host is touched,
    # naming each host's version and the command that finishes the rollout
    split = fleet.digest()
    run = fleet.play("retrain.yml")
    assert run.rc != 0 and "hosts disagree" in run.out, run.out
    assert f"quantshift_release_version={killed['version']}" in run.out
    assert fleet.digest() == split
    # that command, from the same control node, takes over the dead run's lease
    run = fleet.play("deploy.yml", "-e", f"quantshift_release_version={killed['version']}")
    assert run.rc == 0, run.out
    assert "another operation holds the lease" not in run.out
    final = fleet.assert_one_version()
    assert final["version"] == killed["version"]
    assert not lease_file.exists()
    assert fleet.play("retrain.yml").rc == 0  # and the fleet retrains again
    # nothing lost: the model the primary ran before is in its backups, byte for byte
    backup = primary / f"models/backups/regime_classifier_{old['version']}.pkl"
    assert sha(backup) == old["sha256"]
    for h in HOSTS:
        assert not (fleet.root(h) / "models/.promote-journal.json").exists()


def test_a_live_lease_of_another_controller_is_not_taken_over(fleet: Fleet) -> None:
    """No proof that the other node's controller is dead: refused, even with ttl=0."""
    lease_file = fleet.root("primary") / "models/.operation.lease"
    now = time.time()
    lease_file.write_text(json.dumps({
        "owner": "retrain-20261124T020000-1", "host": "primary", "pid": 1, "acquired": now,
        "expires": now + 3600, "controller_host": "other-control-node",
        "controller_pid": "999999999"}))
    lease = lease_file.read_bytes()
    before = fleet.digest()

    run = fleet.play("retrain.yml", "-e", "quantshift_lease_ttl=0")
    assert run.rc != 0
    assert "another operation holds the lease" in run.out
    assert "owner retrain-20261124T020000-1, from other-control-node" in run.out
    assert fleet.digest() == before
    assert lease_file.read_bytes() == lease


def test_an_expired_lease_is_stale_and_taken_over(tmp_path: Path) -> None:
    path = tmp_path / ".operation.lease"
    leases.acquire(path, "dead-run", ttl=0.0)
    time.sleep(0.01)
    got = leases.acquire(path, "next-run", ttl=60)
    assert got["changed"] and got["took_over"]["owner"] == "dead-run"
    with pytest.raises(LockHeld, match="owner next-run"):
        leases.acquire(path, "third-run", ttl=60)
