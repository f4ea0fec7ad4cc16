"""The one way a model becomes active: back up the current one, then an atomic swap.

Promotion, rollback, restore and the doctor's repairs all go through ``install``
(under the store's lock), so the journal, the backup and the quarantine of an
untrusted active file are written the same way whatever the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantshift_ml.store import recovery
from quantshift_ml.store.artifact import Artifact, StoreView
from quantshift_ml.store.checks import brief
from quantshift_ml.store.files import atomic_copy, atomic_write_json, sha256_file
from quantshift_ml.store.layout import meta_for, onnx_for, version_of


def copy_onnx(src_pkl: Path, dst_pkl: Path) -> None:
    """The compiled model follows its pkl; a model without one leaves none behind."""
    src, dst = onnx_for(src_pkl), onnx_for(dst_pkl)
    if src.exists():
        atomic_copy(src, dst)
    else:
        dst.unlink(missing_ok=True)


def _back_up(store: StoreView, previous: Artifact) -> tuple[Path, bool]:
    """The active model's backup path, and whether this call had to write it."""
    layout = store.layout
    path = layout.backup_pkl(previous.version)
    if path.exists() and sha256_file(path) == previous.sha256:
        return path, False
    atomic_copy(layout.active_pkl, path)
    copy_onnx(layout.active_pkl, path)
    atomic_copy(layout.active_meta, meta_for(path))
    return path, True


def _swap(store: StoreView, source: Artifact, previous: Artifact | None) -> None:
    """Copy ``source`` into the active slot; on failure leave the previous model intact.

    Metadata travels byte for byte with its model (staging, active, backups), so
    a restore or a rollback reproduces exactly the files that were there before.
    """
    layout = store.layout
    try:
        atomic_copy(source.pkl, layout.active_pkl)
        copy_onnx(source.pkl, layout.active_pkl)
        atomic_copy(meta_for(source.pkl), layout.active_meta)
    except BaseException:
        # nothing renamed yet -> the old model is intact: drop the journal;
        # otherwise put the previous model back from its backup
        if previous is None or sha256_file(layout.active_pkl) != previous.sha256:
            store.recover()
        else:
            layout.journal.unlink(missing_ok=True)
        raise
    layout.journal.unlink()


def install(store: StoreView, source: Artifact, *, reason: str, prune: bool = True,
            backup: bool = True) -> dict[str, Any]:
    """Back up the active model, then atomically make ``source`` active (under lock).

    An active file that is not trusted (corrupted, unsigned, replaced by hand)
    is moved to ``models/quarantine/`` as evidence, never backed up as good; one
    copied by hand from a backup is that backup. ``prune=False`` keeps every
    backup until the caller has verified the new model (a fleet rollout prunes
    only after the host is healthy, so a restore loses nothing).
    ``backup=False`` is for undoing a failed promotion: the failed model is not kept.
    """
    store.recover()
    state = store.inspect_active()
    quarantined = None
    if state.state == "untrusted":
        quarantined = recovery.quarantine(store, state.detail)
    previous = state.artifact
    if previous is not None and previous.sha256 == source.sha256 and state.state == "ok":
        return {"changed": False, "previous": brief(previous), "current": brief(previous)}
    backup_path: Path | None = None
    backup_created = False
    if previous is not None and backup:
        backup_path, backup_created = _back_up(store, previous)
    atomic_write_json(store.layout.journal, {
        "new_version": source.version, "new_sha256": source.sha256,
        "previous_version": version_of(backup_path) if backup_path else None,
        "reason": reason,
    })
    _swap(store, source, previous)
    pruned = store._prune() if prune else []
    out = {"changed": True, "previous": brief(previous), "current": brief(source),
           "backup_created": backup_created, "pruned": pruned}
    if state.state != "ok":
        out["repaired"] = {"active_was": state.state, "detail": state.detail,
                           "quarantined": str(quarantined) if quarantined else None}
    return out
