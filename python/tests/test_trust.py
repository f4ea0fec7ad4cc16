"""Issue 12: no forged model ever runs, every broken state has a way back.

Each test starts from a reproduction of the issue and checks the documented
outcome, and that nothing else on disk changed where the outcome is a refusal.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from quantshift_ml.cli import dispatch as cli
from quantshift_ml.data import BundledSource
from quantshift_ml.errors import IntegrityError, UsageError
from quantshift_ml.ops import doctor, operations
from quantshift_ml.serving.service import RegimeService
from quantshift_ml.store import ModelStore, signing
from quantshift_ml.store.files import sha256_file

from .conftest import FAST, OPEN, tree_digest


class _Payload:
    """A pickle that runs a shell command when loaded (the attacker's model)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _train(root: Path, as_of: str | None = None, promote: bool = True) -> dict:
    return operations.train(BundledSource(), root=root, config=FAST, gate=OPEN,
                            promote=promote, as_of=as_of)


def _forge(pkl: Path, marker: Path) -> None:
    """Replace a model by a code-running pickle and put its sha256 in the metadata."""
    pkl.write_bytes(pickle.dumps(_Payload(marker)))
    meta_path = pkl.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = sha256_file(pkl)
    meta_path.write_text(json.dumps(meta))


def _cli(*args: str) -> tuple[int, dict]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main([*args, "--json"])
    return code, json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with three models (two backups), copied per test."""
    root = tmp_path_factory.mktemp("trained")
    for as_of in ("2018-06-29", "2018-09-28", "2018-12-31"):
        _train(root, as_of)
    return root


@pytest.fixture
def store_root(trained: Path, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(trained, root, symlinks=True)
    return root


# ---- 1: a forged pickle with a matching sha never runs --------------------------------
def test_forged_active_model_never_runs(store_root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _forge(store_root / "models/regime_classifier.pkl", marker)
    r = str(store_root)
    for args in (["predict", "--root", r], ["train", "--check", "--root", r],
                 ["verify", "--root", r], ["status", "--root", r]):
        code, res = _cli(*args)
        assert code == 4 or (args[0] == "train" and code in (0, 3)), (args, res)
        assert not marker.exists(), args
    assert "forged or altered" in _cli("verify", "--root", r)[1]["error"]
    service = RegimeService(store_root, BundledSource(), "SPY")
    assert not service.reload() and not marker.exists()
    # train --promote gates against no incumbent and quarantines the forged file, unread
    _train(store_root)
    assert not marker.exists()
    quarantined = list((store_root / "models/quarantine").glob("*/regime_classifier.pkl"))
    assert len(quarantined) == 1 and "forged" in (quarantined[0].parent / "REASON.txt").read_text()


def test_forged_backup_never_runs_on_rollback_or_promote(store_root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    store = ModelStore(store_root)
    newest = store.backups()[-1]
    _forge(newest.pkl, marker)
    code, res = _cli("rollback", "--to", newest.version, "--root", str(store_root))
    assert code == 4 and "forged" in res["error"] and not marker.exists()
    staged = store_root / "models/staging" / newest.pkl.name
    shutil.copy(newest.pkl, staged)
    shutil.copy(newest.pkl.with_suffix(".json"), staged.with_suffix(".json"))
    before = tree_digest(store_root / "models")
    code, res = _cli("promote", str(staged), "--root", str(store_root))
    assert code == 4 and not marker.exists()
    assert tree_digest(store_root / "models") == before


def test_unsigned_and_untrusted_keys_are_refused_by_name(store_root: Path, tmp_path: Path) -> None:
    meta_path = store_root / "models/regime_classifier.json"
    meta = json.loads(meta_path.read_text())
    kid = meta["signature"]["key_id"]
    other = tmp_path / "other-keys"
    signing.generate(other)
    code, res = _cli("verify", "--root", str(store_root), "--keys", str(other))
    assert code == 4 and kid in res["error"] and "not trusted" in res["error"]
    del meta["signature"]
    meta_path.write_text(json.dumps(meta))
    code, res = _cli("verify", "--root", str(store_root))
    assert code == 4 and "unsigned" in res["error"] and str(meta_path) in res["error"]


def test_key_rotation(store_root: Path, tmp_path: Path, fleet_keys: Path) -> None:
    """New key installed beside the old: old backups load until the old key is removed."""
    new = tmp_path / "new"
    signing.generate(new)
    ring = tmp_path / "ring"
    shutil.copytree(fleet_keys / "trusted", ring / "trusted")
    for pub in (new / "trusted").glob("*.pub"):
        shutil.copy(pub, ring / "trusted" / pub.name)
    shutil.copy(new / "signing.key", ring / "signing.key")
    store = ModelStore(store_root, keys=signing.Keyring(ring))
    old_backup = store.trusted_backups()[-1]
    os.environ[signing.KEYS_ENV] = str(ring)  # the next training signs with the new key
    try:
        fresh = _train(store_root)
        meta = json.loads((store_root / "models/regime_classifier.json").read_text())
        assert meta["signature"]["key_id"] == signing.generate(new)["key_id"]
        assert store.rollback(old_backup.version)["current"]["version"] == old_backup.version
        old_id = json.loads(old_backup.pkl.with_suffix(".json").read_text())
        for pub in (ring / "trusted").glob("*.pub"):
            if pub.stem != meta["signature"]["key_id"]:
                pub.unlink()  # the old key is removed
        code, res = _cli("verify", "--target", "all", "--root", str(store_root))
        assert code == 4
        states = {Path(c["file"]).name: c["state"] for c in res["verified"]}
        assert states["regime_classifier.pkl"] == "failed"  # the old-key model is active
        assert states[f"regime_classifier_{fresh['version']}.pkl"] == "ok"
        assert old_id["signature"]["key_id"] not in {p.stem for p in (ring / "trusted").iterdir()}
    finally:
        os.environ[signing.KEYS_ENV] = str(fleet_keys)


# ---- 2, 3: paths and symlinks ---------------------------------------------------------
def test_escaping_version_in_backup_metadata_is_refused(store_root: Path) -> None:
    store = ModelStore(store_root)
    backup = store.backups()[-1]
    meta = json.loads(backup.pkl.with_suffix(".json").read_text())
    meta["version"] = "../../../../../ESC/x"
    meta = signing.Keyring.default().sign({k: v for k, v in meta.items() if k != "signature"})
    backup.pkl.with_suffix(".json").write_text(json.dumps(meta))  # even validly signed
    before = tree_digest(store_root)
    with pytest.raises(IntegrityError, match="not YYYYMMDD-HHMMSS"):
        store.rollback(backup.version)
    assert tree_digest(store_root) == before
    assert not (store_root.parent / "ESC").exists()
    with pytest.raises(UsageError, match="version"):
        store.rollback("../../x")


def test_symlinked_lock_is_never_truncated(store_root: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    lock = store_root / "models/.quantshift.lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(victim)
    for args in (["rollback"], ["train", "--promote"]):
        code, res = _cli(*args, "--root", str(store_root))
        assert code == 4 and "symlink" in res["error"], res
    assert victim.read_text() == "precious\n"


def test_symlinked_active_file_is_not_copied_into_backups(store_root: Path) -> None:
    pkl = store_root / "models/regime_classifier.pkl"
    pkl.unlink()
    pkl.symlink_to("/etc/passwd")
    _train(store_root)
    backups = store_root / "models/backups"
    assert all(b"root:" not in p.read_bytes() for p in backups.iterdir())
    quarantined = next((store_root / "models/quarantine").glob("*/regime_classifier.pkl"))
    assert quarantined.is_symlink()  # moved as a link, never read


def test_world_writable_root_is_refused(store_root: Path) -> None:
    os.chmod(store_root, 0o777)
    try:
        code, res = _cli("rollback", "--root", str(store_root))
        assert code == 4 and "world-writable" in res["error"]
    finally:
        os.chmod(store_root, 0o755)


# ---- 5, 6, 7, 8: a way back -----------------------------------------------------------
def test_emergency_cp_then_doctor_names_the_fix_and_the_fix_works(store_root: Path) -> None:
    store = ModelStore(store_root)
    backup = store.backups()[-1]
    active_meta = json.loads((store_root / "models/regime_classifier.json").read_text())
    shutil.copy(backup.pkl, store_root / "models/regime_classifier.pkl")  # the runbook's cp
    code, res = _cli("doctor", "--root", str(store_root))
    assert code == 4 and res["active"]["state"] == "hand-copied"
    fix = res["problems"][0]["fix"]
    assert f"rollback --to {backup.version}" in fix
    code, res = _cli("status", "--root", str(store_root))
    assert code == 4 and res["active"]["file_sha256"] != res["active"]["sha256"]
    # the named fix works: the backup's metadata and compiled model are restored
    code, res = _cli("rollback", "--to", backup.version, "--root", str(store_root))
    assert code == 0 and res["changed"] and res["current"]["version"] == backup.version
    assert store.verify(store.layout.active_pkl).version == backup.version
    assert _cli("doctor", "--root", str(store_root))[1]["healthy"]
    assert active_meta["version"] != backup.version


def test_flipped_byte_then_rollback_and_promote_work(store_root: Path) -> None:
    pkl = store_root / "models/regime_classifier.pkl"
    data = bytearray(pkl.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pkl.write_bytes(bytes(data))
    store = ModelStore(store_root)
    newest = store.trusted_backups()[-1]
    code, res = _cli("rollback", "--to", "latest", "--root", str(store_root))
    assert code == 0 and res["current"]["version"] == newest.version
    assert res["repaired"]["active_was"] == "untrusted" and res["repaired"]["quarantined"]
    assert not any(sha256_file(p) == sha256_file(Path(res["repaired"]["quarantined"]) /
                                                 "regime_classifier.pkl")
                   for p in store.layout.backups.glob("*.pkl"))  # not backed up as good


def test_doctor_repair_after_flipped_byte(store_root: Path) -> None:
    pkl = store_root / "models/regime_classifier.pkl"
    pkl.write_bytes(pkl.read_bytes()[:-10])
    res = doctor.repair(ModelStore(store_root))
    assert res["healthy"] and res["repaired"] and "rolled back" in res["repaired"][0]


def test_rollback_latest_walks_back(store_root: Path) -> None:
    store = ModelStore(store_root)
    versions = [b.version for b in store.backups()]
    assert store.rollback()["current"]["version"] == versions[-1]
    assert store.rollback()["current"]["version"] == versions[-2]
    with pytest.raises(UsageError, match="no backup older"):
        store.rollback()


def test_interrupted_promotion_is_recovered_by_readers(store_root: Path) -> None:
    """A kill -9 between the renames: pkl already new, metadata still old."""
    store = ModelStore(store_root)
    active = store.verify(store.layout.active_pkl)
    backup = store.backups()[-1]
    (store_root / "models/.promote-journal.json").write_text(json.dumps({
        "new_version": backup.version, "new_sha256": backup.sha256,
        "previous_version": active.version, "reason": "promote"}))
    for ext in ("pkl", "json", "onnx"):  # the active model was backed up first
        shutil.copy(store.layout.active_pkl.with_suffix(f".{ext}"), store_root
                    / f"models/backups/regime_classifier_{active.version}.{ext}")
    shutil.copy(backup.pkl, store.layout.active_pkl)  # first rename done, second not
    code, res = _cli("verify", "--root", str(store_root))
    assert code == 0, res
    assert not store.layout.journal.exists()
    service = RegimeService(store_root, BundledSource(), "SPY")
    assert service.reload()


def test_verify_all_lists_every_file(store_root: Path) -> None:
    store = ModelStore(store_root)
    bad = store.backups()[0].pkl
    bad.write_bytes(b"x")
    code, res = _cli("verify", "--target", "all", "--root", str(store_root))
    assert code == 4 and not res["ok"] and res["failed"] == 1
    assert [c["state"] for c in res["verified"]] == ["ok", "failed", "ok"]


# ---- 10: the gate's exit-code contract ------------------------------------------------
def test_refused_gate_exits_3_with_or_without_promote(store_root: Path) -> None:
    before = tree_digest(store_root / "models")
    for extra in ([], ["--promote"]):
        code, res = _cli("train", "--min-accuracy", "0.99", "--as-of", "2011-10-31",
                         "--n-estimators", "10",
                         "--root", str(store_root), *extra)
        assert code == 3 and res["exit_code"] == 3 and res["ok"] is False, res
        assert res["gate"]["passed"] is False
    assert tree_digest(store_root / "models") == before


# ---- 3 (logs), 4 (stale bars), keys CLI, fleet check ---------------------------------
def test_symlinked_logs_are_never_written_through(store_root: Path, tmp_path: Path) -> None:
    from quantshift_ml.monitoring.monitor import run_monitor, write_outputs
    from quantshift_ml.serving import predlog

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    report = run_monitor(store_root, source=None)
    day = report["time"][:10].replace("-", "")
    log_file = store_root / f"logs/model-monitoring-{day}.log"
    log_file.unlink(missing_ok=True)
    log_file.symlink_to(victim)
    with pytest.raises(OSError):
        write_outputs(report, store_root, None)
    db = predlog.db_path(store_root)
    db.parent.mkdir(parents=True, exist_ok=True)
    db.unlink(missing_ok=True)
    db.symlink_to(victim)
    with pytest.raises(IntegrityError, match="symlink"):
        predlog.append(store_root, predlog.Prediction("t", "SPY", "2018-12-31", "Bull", {}, "v"))
    assert victim.read_text() == "precious\n"


def test_predict_says_how_old_its_bar_is(store_root: Path) -> None:
    res = operations.predict_latest(store_root, BundledSource())
    assert res["as_of"] == res["last_bar"] == "2018-12-31"
    assert res["bar_age_days"] > 365 * 7  # the bundled data ends in 2018: plainly stale


def test_keys_generate_show_and_public(tmp_path: Path) -> None:
    keys = tmp_path / "k"
    code, made = _cli("keys", "generate", "--keys", str(keys))
    assert code == 0 and made["changed"] and (keys / "signing.key").stat().st_mode & 0o077 == 0
    code, again = _cli("keys", "generate", "--keys", str(keys))
    assert not again["changed"] and again["key_id"] == made["key_id"]  # never overwritten
    code, shown = _cli("keys", "show", "--keys", str(keys))
    assert shown["trusted"] == [made["key_id"]] == [shown["signing_key"]]
    code, pub = _cli("keys", "public", "--keys", str(keys))
    assert pub["public_key"] == (keys / "signing.pub").read_text()


def test_no_signing_key_refuses_before_anything_is_written(tmp_path: Path,
                                                           fleet_keys: Path) -> None:
    keys = tmp_path / "verify-only"
    shutil.copytree(fleet_keys / "trusted", keys / "trusted")  # a standby: no signing.key
    root = tmp_path / "root"
    code, res = _cli("train", "--root", str(root), "--keys", str(keys), "--n-estimators", "10")
    assert code == 2 and "no signing key" in res["error"]
    assert not (root / "models/staging").exists() or not any((root / "models/staging").iterdir())


def test_fleet_check_names_each_host() -> None:
    from quantshift_ml.ops.fleet import fleet_problems

    ok = {"active": {"state": "ok", "version": "20260101-000000"}, "problems": []}
    newer = {"active": {"state": "ok", "version": "20260201-000000"}, "problems": []}
    fresh = {"active": {"state": "missing"},
             "problems": [{"problem": "no active model", "fix": "x", "kind": "no-model"}]}
    broken = {"active": {"state": "untrusted"},
              "problems": [{"problem": "active model not trusted: forged", "fix": "rollback",
                            "kind": "active"}]}
    assert fleet_problems({"a": ok, "b": ok, "c": fresh, "d": None}) == []
    split = fleet_problems({"a": ok, "b": newer})
    assert len(split) == 1 and "a runs 20260101-000000, b runs 20260201-000000" in split[0]
    assert "quantshift_release_version=20260201-000000" in split[0]
    assert fleet_problems({"a": ok, "b": broken}) == [
        "b: active model not trusted: forged (fix: rollback)"]


def test_exit_code_contract_is_the_same_in_help_readme_and_json(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    for phrase in ("3 the gate refused the candidate", "with or without", "4 integrity failure",
                   "5 change freeze", "exactly when the exit code is not 0", "gate.passed"):
        assert phrase in help_text.replace("``", "`").replace("`", ""), phrase
        assert phrase in readme.replace("`", ""), phrase


# ---- issue 30, finding 2: a broken backup is named wherever backups are counted ------
def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _unsign(pkl: Path) -> None:
    meta_path = pkl.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta["signature"]
    meta_path.write_text(json.dumps(meta))


def _resign_with_another_key(pkl: Path, keys: Path) -> None:
    signing.generate(keys)
    meta_path = pkl.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(signing.Keyring(keys).sign(meta)))


BREAKS = {
    "flipped byte": (lambda pkl, tmp: _flip(pkl), "does not match metadata"),
    "flipped onnx": (lambda pkl, tmp: _flip(pkl.with_suffix(".onnx")),
                     ".onnx: sha256 does not match metadata"),
    "forged pickle": (lambda pkl, tmp: _forge(pkl, tmp / "pwned"), "forged or altered"),
    "unsigned": (lambda pkl, tmp: _unsign(pkl), "unsigned release"),
    "unknown key": (lambda pkl, tmp: _resign_with_another_key(pkl, tmp / "other"),
                    "not trusted here"),
    "metadata deleted": (lambda pkl, tmp: pkl.with_suffix(".json").unlink(),
                         "metadata missing"),
}


@pytest.mark.parametrize("kind", sorted(BREAKS))
def test_a_broken_backup_is_judged_once_the_same_by_monitor_backups_and_rollback(
        store_root: Path, tmp_path: Path, kind: str) -> None:
    """The monitor's count, ``backups`` and rollback's ``skipped`` share one verdict."""
    from quantshift_ml.monitoring.monitor import Thresholds, backups_check

    store = ModelStore(store_root)
    older, newest = [b.version for b in store.backups()]
    broken = store.layout.backup_pkl(newest)
    breaker, fragment = BREAKS[kind]
    breaker(broken, tmp_path)

    checks = {c.version: c for c in store.checked_backups()}
    assert checks[older].intact and not checks[newest].intact
    reason = checks[newest].reason
    assert fragment in reason, reason

    listed = {b["version"]: b for b in operations.status(store_root)["backups"]}
    assert listed[older]["intact"] and listed[older]["reason"] is None
    assert listed[newest]["intact"] is False and listed[newest]["reason"] == reason

    verified = operations.verify(store_root, "all")["verified"]  # active, older, newest
    assert [c["state"] for c in verified] == ["ok", "ok", "failed"]

    check = backups_check(store, Thresholds(backups_min=2))
    assert check["status"] == "WARNING" and check["value"] == 1
    assert f"backup {newest} does not check out: {reason}" in check["message"]

    dry = store.rollback("latest", dry_run=True)
    assert dry["skipped"] == [{"version": newest, "reason": reason}]
    done = store.rollback("latest")
    assert done["current"]["version"] == older
    assert done["skipped"] == [{"version": newest, "reason": reason}]
    assert not (tmp_path / "pwned").exists()


def test_no_intact_backup_left_is_critical_and_rollback_names_each(store_root: Path) -> None:
    from quantshift_ml.monitoring.monitor import Thresholds, backups_check

    store = ModelStore(store_root)
    versions = [b.version for b in store.backups()]
    for v in versions:
        _flip(store.layout.backup_pkl(v))
    check = backups_check(store, Thresholds())
    assert check["status"] == "CRITICAL" and check["value"] == 0
    assert all(f"backup {v} does not check out" in check["message"] for v in versions)
    with pytest.raises(IntegrityError, match="no backup checks out"):
        store.rollback("latest")


def test_rollback_skips_only_what_it_passed_over(store_root: Path) -> None:
    """A broken backup older than the one taken was never reached: not ``skipped``."""
    store = ModelStore(store_root)
    older, newest = [b.version for b in store.backups()]
    _flip(store.layout.backup_pkl(older))
    res = store.rollback("latest", dry_run=True)
    assert res["current"]["version"] == newest and res["skipped"] == []
    assert store.rollback(newest, dry_run=True)["skipped"] == []  # a named version skips none


def test_backups_and_rollback_cli_show_intact_reason_and_skipped(
        store_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ModelStore(store_root)
    older, newest = [b.version for b in store.backups()]
    _flip(store.layout.backup_pkl(newest))
    r = str(store_root)
    code, res = _cli("backups", "--root", r)
    assert code == 0
    by_version = {b["version"]: b for b in res["backups"]}
    assert by_version[older]["intact"] is True and by_version[older]["reason"] is None
    assert by_version[newest]["intact"] is False
    assert "does not match metadata" in by_version[newest]["reason"]

    assert cli.main(["backups", "--root", r]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{older}  intact")
    assert lines[1].startswith(f"{newest}  NOT INTACT") and "does not match metadata" in lines[1]

    code, res = _cli("rollback", "--to", "latest", "--root", r)
    assert code == 0 and res["current"]["version"] == older
    assert [s["version"] for s in res["skipped"]] == [newest]
    assert "does not match metadata" in res["skipped"][0]["reason"]
