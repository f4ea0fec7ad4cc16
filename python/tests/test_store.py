"""Model store: atomic promotion, 3 backups, tamper detection, lock, recovery."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from quantshift_ml.data import BundledSource
from quantshift_ml.errors import IntegrityError, LockHeld, UsageError
from quantshift_ml.ops import operations
from quantshift_ml.store import ModelStore
from quantshift_ml.store.files import sha256_file

from .conftest import FAST, OPEN, tree_digest


class FixedSource(BundledSource):
    """Bundled data cut at a date, so consecutive trainings differ."""

    def __init__(self, as_of: str) -> None:
        super().__init__()
        self.as_of = as_of

    def load(self) -> pd.DataFrame:
        return super().load().loc[: self.as_of]


def _train(root: Path, as_of: str, **kw: object) -> dict:
    kw = {"gate": OPEN, **{k: v for k, v in kw.items() if not (k == "gate" and v is None)}}
    return operations.train(FixedSource(as_of), root=root, config=FAST, promote=True, **kw)


def test_four_promotions_keep_three_backups(tmp_path: Path) -> None:
    versions = []
    for as_of in ("2017-06-30", "2017-12-29", "2018-06-29", "2018-12-31"):
        out = _train(tmp_path, as_of, gate=None)
        versions.append(out["version"])
    store = ModelStore(tmp_path)
    backups = [b.version for b in store.backups()]
    assert backups == versions[0:3]
    active = store.active()
    assert active is not None and active.version == versions[-1]
    assert active.sha256 == sha256_file(store.layout.active_pkl)
    # the training logs keep the old runbook's grep targets
    log = (tmp_path / "logs" / f"model-training-{versions[-1]}.log").read_text()
    assert re.search(r"^Test Accuracy: [01]\.\d{3}$", log, re.M)
    assert re.search(r"^CV Accuracy: [01]\.\d{3}$", log, re.M) and "Features: " in log


def test_training_keeps_the_last_ten_training_logs_and_nothing_else_is_pruned(
        tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    old = [logs / f"model-training-2010{m:02d}01-020000.log" for m in range(1, 12)]
    others = [logs / "model-monitoring-20100101.log", logs / "cron-monitor.log"]
    for f in old + others:
        f.write_text("Test Accuracy: 0.900\n")
    out = _train(tmp_path, "2018-12-31", gate=None)
    kept = sorted(p.name for p in logs.glob("model-training-*.log"))
    # 11 old + the new one = 12: the two oldest go, the newest ten stay
    assert kept == sorted([f.name for f in old[2:]] + [f"model-training-{out['version']}.log"])
    assert all(f.exists() for f in others)


def test_promoting_the_active_model_is_a_no_op(tmp_path: Path) -> None:
    _train(tmp_path, "2018-12-31")
    store = ModelStore(tmp_path)
    before = tree_digest(tmp_path / "models")
    res = store.promote(store.layout.active_pkl)
    assert res["changed"] is False
    assert tree_digest(tmp_path / "models") == before


def test_rollback_latest_and_by_version(tmp_path: Path) -> None:
    a = _train(tmp_path, "2017-12-29")
    b = _train(tmp_path, "2018-06-29")
    c = _train(tmp_path, "2018-12-31")
    store = ModelStore(tmp_path)
    untouched = tree_digest(tmp_path / "models")
    dry = store.rollback("latest", dry_run=True)  # check mode: the store's own dry run
    assert dry["changed"] and dry["current"]["version"] == b["version"]
    assert store.prune(dry_run=True) == [] and tree_digest(tmp_path / "models") == untouched
    res = store.rollback("latest")
    assert res["current"]["version"] == b["version"]
    res = store.rollback("latest")
    assert res["current"]["version"] == a["version"]
    res = store.rollback(c["version"])
    assert store.active().sha256 == c["sha256"]  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="no backup with version"):
        store.rollback("19990101-000000")


def test_tampered_backup_is_refused_before_unpickling(tmp_path: Path) -> None:
    _train(tmp_path, "2018-06-29")
    _train(tmp_path, "2018-12-31")
    store = ModelStore(tmp_path)
    backup = store.backups()[-1].pkl
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0xFF
    backup.write_bytes(bytes(data))
    before = tree_digest(tmp_path / "models")
    with pytest.raises(IntegrityError, match="does not match metadata"):
        store.rollback("latest")
    listed = operations.verify(tmp_path, "all")  # every file listed, the bad one failed
    assert not listed["ok"] and [c["state"] for c in listed["verified"]] == ["ok", "failed"]
    assert tree_digest(tmp_path / "models") == before


def test_lock_refuses_a_second_operation(tmp_path: Path) -> None:
    _train(tmp_path, "2018-12-31")
    store = ModelStore(tmp_path)
    with store.lock("test"), pytest.raises(LockHeld, match="another quantshift operation"):
        store.rollback("latest")


def test_interrupted_swap_is_undone(tmp_path: Path) -> None:
    _train(tmp_path, "2018-06-29")
    first = ModelStore(tmp_path).active()
    b = _train(tmp_path, "2018-12-31")
    store = ModelStore(tmp_path)
    # simulate a crash after the model file was swapped but before its metadata
    backup = store.layout.backup_pkl(first.version)  # type: ignore[union-attr]
    store.layout.active_pkl.write_bytes(b"partial")
    store.layout.journal.write_text(json.dumps({
        "new_version": "x", "new_sha256": "0" * 64, "previous_backup": str(backup)}))
    assert store.recover() == "restored previous"
    store.verify(store.layout.active_pkl)
    assert store.active().version == first.version  # type: ignore[union-attr]
    assert b["version"] != first.version  # type: ignore[union-attr]


def test_restore_after_a_failed_promotion_is_byte_identical(tmp_path: Path) -> None:
    for as_of in ("2016-06-30", "2016-12-30", "2017-06-30", "2017-12-29"):
        _train(tmp_path, as_of)
    store = ModelStore(tmp_path)
    before = {k: v for k, v in tree_digest(tmp_path / "models").items()
              if not k.startswith("staging")}
    previous = store.active()
    cand = operations.train(FixedSource("2018-06-29"), root=tmp_path, config=FAST, gate=OPEN)
    staged = tree_digest(tmp_path / "models")
    dry = store.promote(Path(cand["artifact"]), dry_run=True)
    assert dry["changed"] and dry["current"]["sha256"] == cand["sha256"]
    assert tree_digest(tmp_path / "models") == staged
    res = store.promote(Path(cand["artifact"]), prune=False)
    assert res["backup_created"] and len(store.backups()) == 4  # nothing pruned yet
    store.restore(previous.version, discard_backup=True)  # type: ignore[union-attr]
    after = {k: v for k, v in tree_digest(tmp_path / "models").items()
             if not k.startswith("staging")}
    assert after == before


def test_lease_refusal_is_reported_and_a_dead_local_holder_named(tmp_path: Path) -> None:
    import socket

    from quantshift_ml.store import lease

    path = tmp_path / ".operation.lease"
    here = socket.gethostname()
    lease.acquire(path, "other", details={"controller_host": here,
                                          "controller_pid": 999999999})
    res = lease.acquire_or_report(path, "mine", details={"controller_host": here})
    assert not res["acquired"] and res["held"]["owner"] == "other"
    assert lease.dead_holder(res["held"], here) == "other"  # no such pid here
    assert lease.dead_holder(res["held"], "another-node") is None
    alive = {**res["held"], "controller_pid": os.getpid()}
    assert lease.dead_holder(alive, here) is None
    took = lease.acquire_or_report(path, "mine", takeover="other")
    assert took["acquired"] and took["took_over"]["owner"] == "other"
    assert lease.controller_identity()["controller_pid"] == os.getppid()


def test_a_held_lease_raises_naming_its_holder_unless_reported(tmp_path: Path) -> None:
    """What ``quantshift_model state=locked`` does without ``lease_report``; check mode
    only reads."""
    from quantshift_ml.store import lease

    path = tmp_path / ".operation.lease"
    lease.acquire(path, "other")
    with pytest.raises(LockHeld, match="other"):
        lease.acquire_or_report(path, "mine", report=False)
    assert lease.acquire_or_report(path, "mine", report=False, dry_run=True)["held"]


def test_verify_deployed_names_the_wrong_sha_and_needs_one_for_the_service(
        tmp_path: Path) -> None:
    """The rollout's per-host check (``quantshift_model state=verified``)."""
    operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    store = ModelStore(tmp_path)
    sha = store.verify(store.layout.active_pkl).sha256
    ok = operations.verify_deployed(store, sha)
    assert ok["current"]["sha256"] == sha and ok["changed"] is False
    with pytest.raises(IntegrityError, match="is not the expected sha256 0000"):
        operations.verify_deployed(store, "0000")
    with pytest.raises(UsageError, match="service_url needs expect_sha256"):
        operations.verify_deployed(store, None, service_url="http://127.0.0.1:9")
