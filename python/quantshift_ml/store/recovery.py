"""A way back from every state the active slot can be left in.

States (``ActiveState``): ``ok``; ``missing``; ``hand-copied`` (the runbook's
emergency ``cp backups/V.pkl models/…pkl``: the file is backup V byte for byte,
its metadata is another model's); ``untrusted`` (corrupted, unsigned, forged,
half-written). Promotions, rollbacks and ``doctor --repair`` resolve them the
same way: a hand-copied file is that backup (its metadata and compiled model
are restored), an untrusted one is moved to ``models/quarantine/`` as evidence.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from pathlib import Path

from quantshift_ml.errors import IntegrityError
from quantshift_ml.store.artifact import ActiveState, StoreView
from quantshift_ml.store.files import atomic_copy, read_json, sha256_file
from quantshift_ml.store.layout import VERSION_RE, meta_for, onnx_for

log = logging.getLogger(__name__)


def inspect_active(store: StoreView) -> ActiveState:
    """Classify the active slot without changing it (see the module docstring)."""
    lay = store.layout
    if not any(p.exists() or p.is_symlink() for p in (lay.active_pkl, lay.active_meta)):
        return ActiveState("missing", None, f"no {lay.active_pkl.name}")
    try:
        return ActiveState("ok", store.verify(lay.active_pkl))
    except IntegrityError as exc:
        detail = str(exc)
    if lay.active_pkl.is_file() and not lay.active_pkl.is_symlink():
        sha = sha256_file(lay.active_pkl)
        for backup in store.trusted_backups():
            if backup.sha256 == sha:
                return ActiveState("hand-copied", backup,
                                   f"{lay.active_pkl.name} is backup {backup.version} byte "
                                   "for byte, but its metadata is not that backup's")
    return ActiveState("untrusted", None, detail)


def quarantine(store: StoreView, detail: str) -> Path | None:
    """Move the untrusted active files aside (renames; nothing is read or copied)."""
    lay = store.layout
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    dest = lay.models / "quarantine" / stamp
    moved = []
    for path in (lay.active_pkl, lay.active_meta, onnx_for(lay.active_pkl)):
        if path.exists() or path.is_symlink():
            dest.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest / path.name)  # a symlink moves as a link, unfollowed
            moved.append(path.name)
    if not moved:
        return None
    (dest / "REASON.txt").write_text(detail + "\n", encoding="utf-8")
    log.warning("active model not trusted (%s); moved %s to %s", detail, ", ".join(moved), dest)
    return dest


def _journal_backup(store: StoreView, journal: dict[str, object]) -> Path | None:
    """The backup a journal names, as a path inside backups/ (never a path it gives)."""
    version = journal.get("previous_version")
    if version is None and journal.get("previous_backup"):  # journals of older releases
        version = Path(str(journal["previous_backup"])).stem.rsplit("_", 1)[-1]
    if version is None:
        return None
    if not VERSION_RE.match(str(version)):
        raise IntegrityError(f"{store.layout.journal}: names version {version!r}, not a "
                             "version; remove the journal after checking models/ by hand")
    return store.layout.backup_pkl(str(version))


def recover(store: StoreView) -> str | None:
    """Finish or undo a promotion interrupted between its renames (call under lock)."""
    lay = store.layout
    if not lay.journal.exists():
        return None
    j = read_json(lay.journal)
    target_sha = j.get("new_sha256")
    pkl, meta = lay.active_pkl, lay.active_meta
    pkl_sha = sha256_file(pkl) if pkl.is_file() else None
    meta_sha = read_json(meta).get("sha256") if meta.is_file() else None
    prev = _journal_backup(store, j)
    if pkl_sha == target_sha and meta_sha == target_sha:
        outcome = "completed"
    elif prev is not None:
        prev_sha = read_json(meta_for(prev)).get("sha256")
        if pkl_sha != prev_sha:
            atomic_copy(prev, pkl)
        if meta_sha != prev_sha:
            atomic_copy(meta_for(prev), meta)
        if onnx_for(prev).exists():
            atomic_copy(onnx_for(prev), onnx_for(pkl))
        else:
            onnx_for(pkl).unlink(missing_ok=True)
        outcome = "restored previous"
    else:
        for p in (pkl, meta, onnx_for(pkl)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        outcome = "removed partial first model"
    lay.journal.unlink()
    log.warning("recovered an interrupted promotion to %s: %s", j.get("new_version"), outcome)
    return outcome
