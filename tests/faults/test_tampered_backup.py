"""Tampered backup: rollback refuses it on sha256, before anything is unpickled.

The second test proves the order: the backup is replaced by a pickle whose
unpickling would create a marker file, with the original metadata (and so the
original sha256) kept. Refused, and the marker never appears; loading the same
file directly does create it, so the trap is real.
"""

from __future__ import annotations

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
