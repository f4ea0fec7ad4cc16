"""``quantshift-ml doctor``: say what state a store is in and exactly what to run.

Every broken state reachable by a crash, a hand edit (the old runbook's
emergency ``cp``) or an attack has one remedy here, named as a command; with
``--repair`` the remedies that only restore trusted files are applied:
finishing an interrupted promotion, restoring the metadata of a model copied by
hand from a backup, and rolling a missing or untrusted active model back to the
newest trusted backup (the untrusted files are kept in ``models/quarantine/``).
"""

from __future__ import annotations

from typing import Any

from quantshift_ml.errors import IntegrityError
from quantshift_ml.store import ModelStore
from quantshift_ml.store.files import read_json, sha256_file
from quantshift_ml.store.signing import DEFAULT_KEYS_DIR
from quantshift_ml.store.store import check_permissions


def _problem(what: str, fix: str, kind: str = "store") -> dict[str, str]:
    """One problem; ``kind`` lets callers tell a new host (``no-model``) from a broken one."""
    return {"problem": what, "fix": fix, "kind": kind}


def _keys_problems(store: ModelStore) -> list[dict[str, str]]:
    try:
        trusted = store.keys.trusted()
    except IntegrityError as exc:
        return [_problem(str(exc), "replace the file with the fleet's public key (PEM)")]
    if trusted:
        return []
    return [_problem(f"no trusted public key in {store.keys.trusted_dir}: no model can load",
                     "ansible-playbook playbooks/site.yml (installs quantshift_trusted_keys), "
                     f"or copy the fleet's <key id>.pub into {store.keys.trusted_dir}")]


def _active_problems(store: ModelStore, cmd: str, has_backups: bool
                     ) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The active slot's report and, unless it is ok, its problem and remedy."""
    lay = store.layout
    st = store.inspect_active()
    report: dict[str, Any] = {"state": st.state, "detail": st.detail}
    if lay.active_pkl.is_file() and not lay.active_pkl.is_symlink():
        report["file_sha256"] = sha256_file(lay.active_pkl)
    if lay.active_meta.is_file() and not lay.active_meta.is_symlink():
        try:
            report["metadata_version"] = read_json(lay.active_meta).get("version")
        except ValueError:
            report["metadata_version"] = None
    if st.artifact is not None:
        report["version"] = st.artifact.version
    if st.state == "ok":
        return report, []
    if st.state == "hand-copied":
        assert st.artifact is not None
        return report, [_problem(
            f"active model is backup {st.artifact.version} copied by hand (metadata says "
            f"{report.get('metadata_version')})",
            f"quantshift-ml rollback --to {st.artifact.version} {cmd}   (or quantshift-ml "
            f"doctor --repair {cmd}: "
            "restores that backup's metadata and compiled model)", "active")]
    fix = (f"quantshift-ml rollback --to latest {cmd}   (or quantshift-ml doctor --repair "
           f"{cmd}; the active files are "
           "kept in models/quarantine/ as evidence)" if has_backups
           else "retrain: make retrain / ansible-playbook playbooks/retrain.yml "
                "(no trusted backup to roll back to)")
    if st.state == "missing":
        return report, [_problem("no active model", fix, "no-model")]
    return report, [_problem(f"active model not trusted: {st.detail}", fix, "active")]


def diagnose(store: ModelStore) -> dict[str, Any]:
    """The store's state, each problem with its fix; changes nothing."""
    root = store.layout.root
    cmd = f"--root {root}"
    if str(store.keys.directory) != DEFAULT_KEYS_DIR:  # the fix must trust the same keys
        cmd += f" --keys {store.keys.directory}"
    key_problems = _keys_problems(store)
    problems = list(key_problems)
    try:
        check_permissions(root)
    except IntegrityError as exc:
        problems.append(_problem(str(exc), f"chmod o-w {root}"))
    if store.layout.journal.exists():
        problems.append(_problem(f"interrupted promotion ({store.layout.journal})",
                                 f"quantshift-ml doctor --repair {cmd}   (finishes or undoes it)"))
    good, bad = store._sorted_backups()  # every backup verified once
    active, found = _active_problems(store, cmd, bool(good))
    problems += found
    for version, why in bad.items():
        problems.append(_problem(f"backup {version} does not check out: {why}",
                                 f"rm {store.layout.backups}/regime_classifier_{version}.* "
                                 "(or copy it back from a healthy host)", "backup"))
    return {"root": str(root), "healthy": not problems, "active": active,
            "backups": [{"version": b.version, "sha256": b.sha256} for b in good],
            "bad_backups": sorted(bad), "keys": store.keys.directory.as_posix(),
            "trusted_keys": [] if key_problems else sorted(store.keys.trusted()),
            "problems": problems}


def repair(store: ModelStore) -> dict[str, Any]:
    """Apply the remedies that only restore trusted files; then diagnose again."""
    done: list[str] = []
    with store.lock("doctor"):
        outcome = store.recover()
        if outcome:
            done.append(f"interrupted promotion: {outcome}")
        st = store.inspect_active()
        if st.state == "hand-copied" and st.artifact is not None:
            store._install(st.artifact, reason="doctor: metadata of a hand-copied backup")
            done.append(f"restored the metadata of backup {st.artifact.version}")
        elif st.state in ("missing", "untrusted") and store.trusted_backups():
            res = store._install(store.resolve_backup("latest"), reason="doctor: rollback")
            done.append(f"rolled back to {res['current']['version']}"
                        + (f" (untrusted files in {res['repaired']['quarantined']})"
                           if (res.get("repaired") or {}).get("quarantined") else ""))
    return {**diagnose(store), "repaired": done, "changed": bool(done)}
