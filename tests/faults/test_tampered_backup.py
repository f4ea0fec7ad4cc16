"""Tampered backup: rollback refuses it on sha256, before anything is unpickled.

The second test proves the order: the backup is replaced by a pickle whose
unpickling would create a marker file, with the original metadata (and so the
original sha256) kept. Refused, and the marker never appears; loading the same
file directly does create it, so the trap is real.

The last two (issue 30) break the newest of two backups and follow it through
what an operator reads: the daily monitor (WARNING naming the version and the
reason), ``backups --json`` (``intact`` false, ``reason``), ``rollback --to
latest --json`` (``skipped``), and on the fleet monitor.yml's table and
rollback.yml's report of the skipped backup.
"""

from __future__ import annotations

import json
import pathlib

import joblib

from .conftest import HOSTS, Fleet, assert_consistent, qs, tree


class Trap:
    """Unpickling this calls ``Path(marker).touch()``."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _plant_trap(backup: pathlib.Path, marker: pathlib.Path) -> None:
    joblib.dump({"model": Trap(marker), "features": [], "version": "trap"}, backup)


def _only_backup(root: pathlib.Path) -> pathlib.Path:
    (pkl,) = sorted((root / "models/backups").glob("regime_classifier_*.pkl"))
    return pkl


def test_one_flipped_byte_in_a_backup_is_refused_with_exit_4(store):
    backup = _only_backup(store)
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0x01
    backup.write_bytes(bytes(data))
    before = tree(store)

    run = qs("rollback", "--root", str(store))
    assert run.returncode == 4, run.stderr
    assert "does not match metadata" in run.stderr and "refusing to load it" in run.stderr
    assert backup.name in run.stderr
    assert tree(store) == before


def test_a_trapped_backup_is_refused_before_it_is_unpickled(store, tmp_path):
    marker = tmp_path / "unpickled.marker"
    backup = _only_backup(store)
    _plant_trap(backup, marker)  # the metadata beside it keeps the original sha256
    before = tree(store)
    active = assert_consistent(store)

    run = qs("rollback", "--to", backup.stem.rsplit("_", 1)[-1], "--root", str(store))
    assert run.returncode == 4, run.stderr
    assert "does not match metadata" in run.stderr
    assert not marker.exists(), "the backup was unpickled"
    assert tree(store) == before
    assert assert_consistent(store) == active

    joblib.load(backup)  # the control: unpickling it really does spring the trap
    assert marker.exists()


def test_fleet_rollback_refuses_a_trapped_backup_and_changes_no_host(fleet: Fleet, tmp_path):
    marker = tmp_path / "unpickled.marker"
    _plant_trap(_only_backup(fleet.root("primary")), marker)
    before = fleet.digest()

    run = fleet.play("rollback.yml")
    assert run.rc != 0
    assert "Rollback refused" in run.out and "does not match metadata" in run.out, run.out
    assert "No host was changed" in run.out
    assert not marker.exists()
    assert fleet.digest() == before
    for h in HOSTS:
        assert not (fleet.root(h) / "models/.operation.lease").exists()


def _two_backups_newest_flipped(root: pathlib.Path) -> tuple[str, str]:
    """One more promotion (two backups), then a byte flipped in the newer backup."""
    run = qs("train", "--root", str(root), "--promote")
    assert run.returncode == 0, run.stderr
    older, newest = (p.stem.rsplit("_", 1)[-1]
                     for p in sorted((root / "models/backups").glob("*.pkl")))
    pkl = root / f"models/backups/regime_classifier_{newest}.pkl"
    data = bytearray(pkl.read_bytes())
    data[len(data) // 2] ^= 0x01
    pkl.write_bytes(bytes(data))
    return older, newest


def test_a_tampered_backup_shows_in_monitor_backups_and_rollback_json(store):
    older, newest = _two_backups_newest_flipped(store)

    run = qs("monitor", "--root", str(store), "--no-live", "--json")
    report = json.loads(run.stdout)
    check = next(c for c in report["checks"] if c["name"] == "backups")
    assert run.returncode >= 1 and check["status"] == "WARNING", check
    assert check["value"] == 1 and f"backup {newest} does not check out" in check["message"]
    assert "does not match metadata" in check["message"]

    run = qs("backups", "--root", str(store), "--json")
    listed = {b["version"]: b for b in json.loads(run.stdout)["backups"]}
    assert run.returncode == 0 and listed[older]["intact"] is True
    assert listed[newest]["intact"] is False
    assert "does not match metadata" in listed[newest]["reason"]

    run = qs("rollback", "--to", "latest", "--root", str(store), "--json")
    res = json.loads(run.stdout)
    assert run.returncode == 0 and res["current"]["version"] == older, run.stderr
    assert res["skipped"] == [{"version": newest, "reason": listed[newest]["reason"]}]


NO_DRIFT = ("-e", json.dumps({"quantshift_monitor_thresholds": {
    "drift_days": 0, "importance_rank_warn": -1.0, "importance_rank_crit": -1.0,
    "importance_top_changes": 99}}))


def test_fleet_monitor_and_rollback_name_the_tampered_backup(fleet: Fleet):
    older, newest = _two_backups_newest_flipped(fleet.root("primary"))

    run = fleet.play("monitor.yml", *NO_DRIFT)
    table = " ".join(run.out.split("Fleet health", 1)[-1].split())  # YAML output wraps lines
    assert "primary WARNING" in table, table
    row = table.split("primary WARNING", 1)[-1].split("standby", 1)[0]
    assert f"backup {newest} does not check out" in row and "does not match metadata" in row, table

    run = fleet.play("rollback.yml")
    assert run.rc == 0, run.out
    assert "Report the backups skipped because they do not check out" in run.out
    assert f"primary: skipped backup {newest}: " in run.out, run.out
    metas = [assert_consistent(fleet.root(h)) for h in HOSTS]
    assert {m["version"] for m in metas} == {older}
