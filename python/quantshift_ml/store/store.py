"""ModelStore: stage, promote, roll back, verify and prune models on one root.

Invariants (see docs/reliability.md):
- nothing is unpickled before its sha256 matches its metadata;
- the active model is replaced only by an atomic rename, after the current one
  has been copied to ``backups/``; a journal written before the swap lets the
  next operation finish or undo a swap interrupted between the two renames;
- every mutating operation holds the store's exclusive lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantshift_ml.errors import IntegrityError, UsageError
from quantshift_ml.store.files import (
    atomic_copy,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    sha256_file,
)
from quantshift_ml.store.layout import VERSION_RE, Layout, meta_for, onnx_for, version_of
from quantshift_ml.store.lock import StoreLock

log = logging.getLogger(__name__)

DEFAULT_KEEP_BACKUPS = 3


@dataclass(frozen=True)
class Artifact:
    """A model file and its metadata, not yet trusted."""

    pkl: Path
    meta: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.meta.get("version", ""))

    @property
    def sha256(self) -> str:
        return str(self.meta.get("sha256", ""))


def _now_version() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


class ModelStore:
    def __init__(self, root: Path, keep_backups: int = DEFAULT_KEEP_BACKUPS) -> None:
        if keep_backups < 1:
            raise UsageError("keep_backups must be at least 1: a promotion always keeps one")
        self.layout = Layout(Path(root))
        self.keep_backups = keep_backups

    # ---- reading -----------------------------------------------------------------
    def lock(self, purpose: str) -> StoreLock:
        self.layout.models.mkdir(parents=True, exist_ok=True)
        return StoreLock(self.layout.lock_file, purpose)

    def load_artifact(self, pkl: Path) -> Artifact:
        meta_path = meta_for(pkl)
        if not pkl.exists():
            raise IntegrityError(f"{pkl}: model file missing")
        if not meta_path.exists():
            raise IntegrityError(f"{meta_path}: metadata missing for {pkl.name}")
        try:
            meta = read_json(meta_path)
        except (ValueError, OSError) as exc:
            raise IntegrityError(f"{meta_path}: unreadable metadata: {exc}") from exc
        return Artifact(pkl=pkl, meta=meta)

    def verify(self, pkl: Path, *, content: bytes | None = None) -> Artifact:
        """Check a file's sha256 against its metadata; raise IntegrityError on mismatch.

        With ``content`` (the file's bytes, already read) the check is on those
        very bytes, so what is unpickled afterwards is what was verified.
        """
        art = self.load_artifact(pkl)
        actual = sha256_file(pkl) if content is None else hashlib.sha256(content).hexdigest()
        if not art.sha256:
            raise IntegrityError(f"{meta_for(pkl)}: no sha256 recorded")
        if actual != art.sha256:
            raise IntegrityError(
                f"{pkl}: sha256 {actual[:12]}... does not match metadata {art.sha256[:12]}... "
                "(file corrupted or tampered with); refusing to load it"
            )
        onnx_sha = (art.meta.get("onnx") or {}).get("sha256")
        if onnx_sha:
            onnx = onnx_for(pkl)
            if not onnx.exists():
                raise IntegrityError(f"{onnx}: compiled model named in the metadata is missing")
            if sha256_file(onnx) != onnx_sha:
                raise IntegrityError(f"{onnx}: sha256 does not match metadata; refusing it")
        return art

    def load_model(self, pkl: Path) -> tuple[dict[str, Any], Artifact]:
        """Verify, then unpickle: never the other way round.

        The file is read once and the verified bytes are the ones unpickled: a
        file swapped between the check and the load cannot slip through.
        joblib (and with it numpy and scikit-learn) is imported only here and in
        ``stage``: promote, verify, prune and the lease run on every host at each
        rollout, and need none of it.
        """
        import joblib

        try:
            content = pkl.read_bytes()
        except FileNotFoundError:
            content = None  # verify names the missing file
        art = self.verify(pkl, content=content)
        assert content is not None
        return joblib.load(io.BytesIO(content)), art

    def active(self) -> Artifact | None:
        if not self.layout.active_pkl.exists() and not self.layout.active_meta.exists():
            return None
        return self.load_artifact(self.layout.active_pkl)

    def backups(self) -> list[Artifact]:
        """Backups, oldest first (versions sort chronologically)."""
        out = []
        if self.layout.backups.is_dir():
            for pkl in sorted(self.layout.backups.glob("regime_classifier_*.pkl")):
                if version_of(pkl) is None:
                    continue
                try:
                    out.append(self.load_artifact(pkl))
                except IntegrityError as exc:
                    log.warning("ignoring backup %s: %s", pkl.name, exc)
        return sorted(out, key=lambda a: version_of(a.pkl) or "")

    def new_version(self) -> str:
        """A UTC timestamp version not used by the active model, a backup or a candidate."""
        taken = {p.stem.rsplit("_", 1)[-1] for p in self.layout.models.rglob("*.pkl")}
        active = self.active() if self.layout.active_meta.exists() else None
        if active is not None:
            taken.add(active.version)
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        version = now.strftime("%Y%m%d-%H%M%S")
        while version in taken:
            now += dt.timedelta(seconds=1)
            version = now.strftime("%Y%m%d-%H%M%S")
        return version

    # ---- writing -----------------------------------------------------------------
    def stage(self, bundle: dict[str, Any], meta: dict[str, Any],
              onnx: bytes | None = None) -> Artifact:
        """Write a candidate (and its compiled form) to staging, sha256s in its metadata."""
        version = str(meta["version"])
        pkl = self.layout.staged_pkl(version)
        pkl.parent.mkdir(parents=True, exist_ok=True)
        tmp = pkl.with_name(f".{pkl.name}.tmp")
        import joblib

        try:
            joblib.dump(bundle, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o640)
            os.replace(tmp, pkl)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        full = {**meta, "sha256": sha256_file(pkl)}
        try:
            if onnx is not None:
                atomic_write_bytes(onnx_for(pkl), onnx)
                full["onnx"] = {**(meta.get("onnx") or {}), "file": onnx_for(pkl).name,
                                "sha256": sha256_file(onnx_for(pkl))}
            atomic_write_json(meta_for(pkl), full)
        except BaseException:
            # a half-staged candidate (e.g. disk full) is removed, never left to promote
            for p in (pkl, onnx_for(pkl), meta_for(pkl)):
                p.unlink(missing_ok=True)
            raise
        return Artifact(pkl=pkl, meta=full)

    @staticmethod
    def _copy_onnx(src_pkl: Path, dst_pkl: Path) -> None:
        """The compiled model follows its pkl; a model without one leaves none behind."""
        src, dst = onnx_for(src_pkl), onnx_for(dst_pkl)
        if src.exists():
            atomic_copy(src, dst)
        else:
            dst.unlink(missing_ok=True)

    def _remove_stale_temp_files(self) -> None:
        """Temp files (``.NAME.xxxx.tmp``) left by a writer killed mid-write.

        Every writer holds the store lock, so under the lock any such file is stale.
        """
        for d in (self.layout.models, self.layout.backups, self.layout.staging):
            if d.is_dir():
                for tmp in d.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)

    def recover(self) -> str | None:
        """Finish or undo a promotion interrupted between its renames (call under lock)."""
        self._remove_stale_temp_files()
        journal = self.layout.journal
        if not journal.exists():
            return None
        j = read_json(journal)
        target_sha = j.get("new_sha256")
        pkl, meta = self.layout.active_pkl, self.layout.active_meta
        pkl_sha = sha256_file(pkl) if pkl.exists() else None
        meta_sha = read_json(meta).get("sha256") if meta.exists() else None
        if pkl_sha == target_sha and meta_sha == target_sha:
            outcome = "completed"
        else:
            prev = j.get("previous_backup")
            if prev:
                prev_sha = read_json(meta_for(Path(prev))).get("sha256")
                if pkl_sha != prev_sha:
                    atomic_copy(Path(prev), pkl)
                if meta_sha != prev_sha:
                    atomic_copy(meta_for(Path(prev)), meta)
                self._copy_onnx(Path(prev), pkl)
                outcome = "restored previous"
            else:
                for p in (pkl, meta, onnx_for(pkl)):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
                outcome = "removed partial first model"
        journal.unlink()
        log.warning("recovered an interrupted promotion to %s: %s", j.get("new_version"), outcome)
        return outcome

    def _install(self, source: Artifact, *, reason: str, prune: bool = True,
                 backup: bool = True) -> dict[str, Any]:
        """Back up the active model, then atomically make ``source`` active (under lock).

        ``prune=False`` keeps every backup until the caller has verified the new model
        (a fleet rollout prunes only after the host is healthy, so a restore loses
        nothing). ``backup=False`` is for undoing a failed promotion: the failed model
        is not kept.
        """
        self.recover()
        previous = self.active()
        if previous is not None and previous.sha256 == source.sha256:
            return {"changed": False, "previous": _brief(previous), "current": _brief(previous)}
        backup_path: Path | None = None
        backup_created = False
        if previous is not None and backup:
            prev = self.verify(self.layout.active_pkl) if previous.sha256 else previous
            backup_path = self.layout.backup_pkl(prev.version or _now_version())
            if not backup_path.exists() or sha256_file(backup_path) != prev.sha256:
                atomic_copy(self.layout.active_pkl, backup_path)
                self._copy_onnx(self.layout.active_pkl, backup_path)
                atomic_copy(self.layout.active_meta, meta_for(backup_path))
                backup_created = True
        atomic_write_json(self.layout.journal, {
            "new_version": source.version, "new_sha256": source.sha256,
            "previous_backup": str(backup_path) if backup_path else None, "reason": reason,
        })
        # Metadata travels byte for byte with its model (staging, active, backups), so
        # a restore or a rollback reproduces exactly the files that were there before.
        try:
            atomic_copy(source.pkl, self.layout.active_pkl)
            self._copy_onnx(source.pkl, self.layout.active_pkl)
            atomic_copy(meta_for(source.pkl), self.layout.active_meta)
        except BaseException:
            # nothing renamed yet -> the old model is intact: drop the journal;
            # otherwise put the previous model back from its backup
            if previous is None or sha256_file(self.layout.active_pkl) != previous.sha256:
                self.recover()
            else:
                self.layout.journal.unlink(missing_ok=True)
            raise
        self.layout.journal.unlink()
        pruned = self._prune() if prune else []
        return {"changed": True, "previous": _brief(previous), "current": _brief(source),
                "backup_created": backup_created,
                "pruned": pruned}

    def promote(self, candidate: Path, *, prune: bool = True) -> dict[str, Any]:
        """Make a verified candidate active, keeping the previous one as a backup."""
        with self.lock("promote"):
            art = self.verify(candidate)
            if not VERSION_RE.match(art.version):
                raise IntegrityError(f"{candidate}: metadata has no valid version")
            return self._install(art, reason="promote", prune=prune)

    def restore(self, version: str, *, discard_backup: bool) -> dict[str, Any]:
        """Undo a failed promotion: make backup ``version`` active again.

        The failed model is not backed up, and with ``discard_backup`` the backup the
        promotion created is removed again, so models/ ends byte-identical to before
        the promotion.
        """
        with self.lock("restore"):
            target = self.verify(self.resolve_backup(version).pkl)
            res = self._install(target, reason=f"restore {version}", prune=False, backup=False)
            if discard_backup:
                for p in (target.pkl, meta_for(target.pkl), onnx_for(target.pkl)):
                    p.unlink(missing_ok=True)
            return res

    def resolve_backup(self, to: str = "latest") -> Artifact:
        """``latest`` = newest backup older than the active version; or an exact version."""
        backups = self.backups()
        if not backups:
            raise UsageError(f"no backups in {self.layout.backups}: nothing to roll back to")
        if to == "latest":
            active = self.active()
            older = [b for b in backups if active is None or b.version < active.version]
            candidates = older or [b for b in backups if active is None
                                   or b.sha256 != active.sha256]
            if not candidates:
                raise UsageError("every backup is the active model: nothing to roll back to")
            return candidates[-1]
        for b in backups:
            if b.version == to:
                return b
        raise UsageError(f"no backup with version {to!r}; available: "
                         f"{', '.join(b.version for b in backups)}")

    def rollback(self, to: str = "latest") -> dict[str, Any]:
        """Verify a backup's sha256 (before any unpickling) and make it active."""
        with self.lock("rollback"):
            target = self.resolve_backup(to)
            art = self.verify(target.pkl)
            return self._install(art, reason=f"rollback to {art.version}")

    def _prune(self) -> list[str]:
        backups = sorted(self.layout.backups.glob("regime_classifier_*.pkl"))
        backups = [b for b in backups if version_of(b)]
        removed = []
        for pkl in backups[: max(0, len(backups) - self.keep_backups)]:
            for p in (pkl, meta_for(pkl), onnx_for(pkl)):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            removed.append(version_of(pkl) or pkl.name)
        for staged in self.layout.staging.glob("*.pkl") if self.layout.staging.is_dir() else []:
            active = self.active()
            if active is not None and active.version in staged.name:
                for p in (staged, meta_for(staged), onnx_for(staged)):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
        return removed

    def prune(self) -> list[str]:
        with self.lock("prune"):
            return self._prune()


def _brief(art: Artifact | None) -> dict[str, Any] | None:
    if art is None:
        return None
    return {"version": art.version, "sha256": art.sha256}
