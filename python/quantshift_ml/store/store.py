"""ModelStore: stage, promote, roll back, verify and prune models on one root.

Invariants (see docs/reliability.md):
- nothing is read as a model before its metadata's signature checks out against
  a trusted fleet key (``signing.py``) and its sha256s match that metadata;
- versions are validated wherever they are read, and the store never follows a
  symlink: a link where a model, its metadata or a store directory should be is
  refused;
- the active model is replaced only by an atomic rename, after the current one
  has been copied to ``backups/``; a journal written before the swap lets the
  next operation finish or undo a swap interrupted between the two renames;
- every mutating operation holds the store's exclusive lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from quantshift_ml import defaults
from quantshift_ml.errors import IntegrityError, UsageError
from quantshift_ml.store import backups, checks, recovery
from quantshift_ml.store.artifact import ActiveState, Artifact, refuse_symlink
from quantshift_ml.store.backups import BackupCheck, Choice
from quantshift_ml.store.checks import brief, check_permissions
from quantshift_ml.store.compat import unpickle
from quantshift_ml.store.files import (
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    sha256_file,
)
from quantshift_ml.store.install import install
from quantshift_ml.store.layout import VERSION_RE, Layout, meta_for, onnx_for
from quantshift_ml.store.lock import StoreLock
from quantshift_ml.store.signing import Keyring

log = logging.getLogger(__name__)

DEFAULT_KEEP_BACKUPS = defaults.KEEP_BACKUPS


def _now_version() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


class ModelStore:
    def __init__(self, root: Path, keep_backups: int = DEFAULT_KEEP_BACKUPS,
                 keys: Keyring | None = None) -> None:
        if keep_backups < 1:
            raise UsageError("keep_backups must be at least 1: a promotion always keeps one")
        self.layout = Layout(Path(root))
        self.keep_backups = keep_backups
        self.keys = keys or Keyring.default()

    # ---- reading -----------------------------------------------------------------
    def lock(self, purpose: str) -> StoreLock:
        for d in (self.layout.root, self.layout.models):
            refuse_symlink(d)
        self.layout.models.mkdir(parents=True, exist_ok=True)
        for d in (self.layout.backups, self.layout.staging):
            refuse_symlink(d)
        check_permissions(self.layout.root)
        return StoreLock(self.layout.lock_file, purpose)

    def load_artifact(self, pkl: Path) -> Artifact:
        """A model file and its metadata, read without trusting either (no symlinks)."""
        return checks.load_artifact(pkl)

    def verify(self, pkl: Path, *, content: bytes | None = None,
               onnx_content: bytes | None = None) -> Artifact:
        """Check the metadata's signature, then the files' sha256s; raise IntegrityError.

        With ``content`` / ``onnx_content`` (the files' bytes, already read) the
        check is on those very bytes, so what is unpickled (or handed to
        onnxruntime) afterwards is what was verified.
        """
        art = checks.load_artifact(pkl)
        self.keys.check(art.meta, meta_for(pkl))
        checks.check_version(art)
        checks.check_files(art, content=content, onnx_content=onnx_content)
        return art

    def load_model(self, pkl: Path) -> tuple[dict[str, Any], Artifact]:
        """Verify, then unpickle: never the other way round.

        The file is read once and the verified bytes are the ones unpickled: a
        file swapped between the check and the load cannot slip through.
        joblib (and with it numpy and scikit-learn) is imported only here and in
        ``stage``: promote, verify, prune and the lease run on every host at each
        rollout, and need none of it.
        """
        try:
            content = pkl.read_bytes()
        except FileNotFoundError:
            content = None  # verify names the missing file
        art = self.verify(pkl, content=content)
        assert content is not None
        return unpickle(content), art

    def active(self) -> Artifact | None:
        """The active slot's metadata as written, untrusted (``None`` when unreadable).

        For bookkeeping only (versions taken, age): anything that loads or trusts
        the active model goes through ``verify`` or ``inspect_active``.
        """
        meta = self.layout.active_meta
        if meta.is_symlink() or not meta.is_file():
            return None
        try:
            return Artifact(pkl=self.layout.active_pkl, meta=read_json(meta))
        except (ValueError, OSError):
            return None

    def backups(self) -> list[Artifact]:
        """Backups, oldest first (versions sort chronologically)."""
        return backups.listed(self)

    def new_version(self) -> str:
        """A UTC timestamp version not used by the active model, a backup or a candidate."""
        taken = {p.stem.rsplit("_", 1)[-1] for p in self.layout.models.rglob("*.pkl")}
        active = self.active()
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
        """Write a candidate (and its compiled form) to staging, signed metadata beside it.

        The signing key is checked first, so a host without it writes nothing.
        """
        version = str(meta["version"])
        if not VERSION_RE.match(version):
            raise UsageError(f"version {version!r} is not YYYYMMDD-HHMMSS")
        self.keys.require_signer()
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
            full = self.keys.sign(full)
            atomic_write_json(meta_for(pkl), full)
        except BaseException:
            # a half-staged candidate (e.g. disk full) is removed, never left to promote
            for p in (pkl, onnx_for(pkl), meta_for(pkl)):
                p.unlink(missing_ok=True)
            raise
        return Artifact(pkl=pkl, meta=full)

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
        return recovery.recover(self)

    def recover_if_interrupted(self) -> str | None:
        """For commands that only read: recover an interrupted promotion before reading.

        A journal means the active slot may be mid-swap. Its state is not tampering,
        so readers finish (or undo) the swap under the lock instead of reporting
        the half-swapped file as corrupted; a reader that cannot write the store
        reports "interrupted promotion" and names the command that fixes it.
        """
        if not self.layout.journal.exists():
            return None
        try:
            with self.lock("recover"):
                return self.recover()
        except OSError as exc:  # not the owner, or a read-only view (the service's unit)
            raise IntegrityError(
                f"interrupted promotion ({self.layout.journal}): run `quantshift-ml doctor "
                f"--repair --root {self.layout.root}` as the store's owner ({exc})") from exc

    def inspect_active(self) -> ActiveState:
        """The active slot's state, without trusting or changing anything."""
        return recovery.inspect_active(self)

    def _install(self, source: Artifact, *, reason: str, prune: bool = True,
                 backup: bool = True) -> dict[str, Any]:
        """Back up the active model, then atomically make ``source`` active (under lock)."""
        return install(self, source, reason=reason, prune=prune, backup=backup)

    def would_install(self, target: Artifact) -> dict[str, Any]:
        """A dry run of ``_install``: what would be active after it (check mode).

        Like the real swap, an active file that does not check out is no current
        model, so installing onto it always counts as a change.
        """
        active = self.inspect_active()
        before = brief(active.artifact if active.state == "ok" else None)
        after = brief(target)
        changed = before is None or after is None or before["sha256"] != after["sha256"]
        return {"changed": changed, "previous": before,
                "current": after if changed else before, "dry_run": True}

    def promote(self, candidate: Path, *, prune: bool = True,
                dry_run: bool = False) -> dict[str, Any]:
        """Make a verified candidate active, keeping the previous one as a backup."""
        if dry_run:
            return self.would_install(self.verify(candidate))
        with self.lock("promote"):
            return self._install(self.verify(candidate), reason="promote", prune=prune)

    def restore(self, version: str, *, discard_backup: bool,
                dry_run: bool = False) -> dict[str, Any]:
        """Undo a failed promotion: make backup ``version`` active again.

        The failed model is not backed up, and with ``discard_backup`` the backup the
        promotion created is removed again, so models/ ends byte-identical to before
        the promotion.
        """
        if dry_run:
            return self.would_install(self.verify(self.resolve_backup(version).pkl))
        with self.lock("restore"):
            target = self.verify(self.resolve_backup(version).pkl)
            res = self._install(target, reason=f"restore {version}", prune=False, backup=False)
            if discard_backup:
                for p in (target.pkl, meta_for(target.pkl), onnx_for(target.pkl)):
                    p.unlink(missing_ok=True)
            return res

    def checked_backups(self) -> list[BackupCheck]:
        """Every backup, oldest first, verified as a rollback would: intact, or why not."""
        return backups.checked(self)

    def trusted_backups(self) -> list[Artifact]:
        """Backups whose signature and sha256s check out, oldest first."""
        return backups.sorted_backups(self)[0]

    def _sorted_backups(self) -> tuple[list[Artifact], dict[str, str]]:
        """(trusted backups oldest first, version -> why each other one is refused)."""
        return backups.sorted_backups(self)

    def resolve_backup(self, to: str = "latest") -> Artifact:
        """``latest``: the newest trusted backup older than the active model; or a version."""
        return backups.resolve(self, to)

    def choose_backup(self, to: str = "latest") -> Choice:
        """``resolve_backup``, with the broken backups ``latest`` skipped to reach it."""
        return backups.choose(self, to)

    def rollback(self, to: str = "latest", *, dry_run: bool = False) -> dict[str, Any]:
        """Verify a backup (signature, sha256s; no unpickling) and make it active.

        ``skipped`` lists the backups passed over because they do not check out
        (``backups.Choice``): the caller (``--json``, the Ansible module) sees
        them, not only the log.
        """
        if dry_run:
            choice = self.choose_backup(to)
            return {**self.would_install(choice.artifact), "skipped": choice.skipped}
        with self.lock("rollback"):
            self.recover()
            choice = self.choose_backup(to)
            art = choice.artifact
            return {**self._install(art, reason=f"rollback to {art.version}"),
                    "skipped": choice.skipped}

    def _prune(self) -> list[str]:
        return backups.prune(self)

    def prune(self, *, dry_run: bool = False) -> list[str]:
        """Remove old backups (``dry_run``: only name them)."""
        if dry_run:
            return backups.prune(self, dry_run=True)
        with self.lock("prune"):
            return backups.prune(self)


__all__ = ["ModelStore", "check_permissions"]
