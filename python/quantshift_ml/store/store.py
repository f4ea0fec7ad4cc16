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
import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any

from quantshift_ml.errors import IntegrityError, UsageError
from quantshift_ml.store import recovery
from quantshift_ml.store.artifact import ActiveState, Artifact, refuse_symlink
from quantshift_ml.store.files import (
    atomic_copy,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    sha256_file,
)
from quantshift_ml.store.layout import VERSION_RE, Layout, meta_for, onnx_for, version_of
from quantshift_ml.store.lock import StoreLock
from quantshift_ml.store.signing import Keyring

log = logging.getLogger(__name__)

DEFAULT_KEEP_BACKUPS = 3


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
        meta_path = meta_for(pkl)
        for path in (pkl, meta_path, onnx_for(pkl)):
            refuse_symlink(path)
        if not pkl.exists():
            raise IntegrityError(f"{pkl}: model file missing")
        if not meta_path.exists():
            raise IntegrityError(f"{meta_path}: metadata missing for {pkl.name}")
        try:
            meta = read_json(meta_path)
        except (ValueError, OSError) as exc:
            raise IntegrityError(f"{meta_path}: unreadable metadata: {exc}") from exc
        return Artifact(pkl=pkl, meta=meta)

    def _check_version(self, art: Artifact) -> None:
        """A version names files: it must be a timestamp, and the one in the file's name."""
        if not VERSION_RE.match(art.version):
            raise IntegrityError(f"{meta_for(art.pkl)}: version {art.version!r} is not "
                                 "YYYYMMDD-HHMMSS; refusing it")
        named = version_of(art.pkl)
        if named is not None and named != art.version:
            raise IntegrityError(f"{meta_for(art.pkl)}: version {art.version} does not match "
                                 f"its file name ({art.pkl.name}); refusing it")

    def verify(self, pkl: Path, *, content: bytes | None = None,
               onnx_content: bytes | None = None) -> Artifact:
        """Check the metadata's signature, then the files' sha256s; raise IntegrityError.

        With ``content`` / ``onnx_content`` (the files' bytes, already read) the
        check is on those very bytes, so what is unpickled (or handed to
        onnxruntime) afterwards is what was verified.
        """
        art = self.load_artifact(pkl)
        self.keys.check(art.meta, meta_for(pkl))
        self._check_version(art)
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
            if onnx_content is None and not onnx.exists():
                raise IntegrityError(f"{onnx}: compiled model named in the metadata is missing")
            actual_onnx = (sha256_file(onnx) if onnx_content is None
                           else hashlib.sha256(onnx_content).hexdigest())
            if actual_onnx != onnx_sha:
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
        """Back up the active model, then atomically make ``source`` active (under lock).

        An active file that is not trusted (corrupted, unsigned, replaced by hand)
        is moved to ``models/quarantine/`` as evidence, never backed up as good; one
        copied by hand from a backup is that backup. ``prune=False`` keeps every
        backup until the caller has verified the new model (a fleet rollout prunes
        only after the host is healthy, so a restore loses nothing).
        ``backup=False`` is for undoing a failed promotion: the failed model is not kept.
        """
        self.recover()
        state = self.inspect_active()
        quarantined = None
        if state.state == "untrusted":
            quarantined = recovery.quarantine(self, state.detail)
        previous = state.artifact
        if previous is not None and previous.sha256 == source.sha256 and state.state == "ok":
            return {"changed": False, "previous": _brief(previous), "current": _brief(previous)}
        backup_path: Path | None = None
        backup_created = False
        if previous is not None and backup:
            backup_path = self.layout.backup_pkl(previous.version)
            if not backup_path.exists() or sha256_file(backup_path) != previous.sha256:
                atomic_copy(self.layout.active_pkl, backup_path)
                self._copy_onnx(self.layout.active_pkl, backup_path)
                atomic_copy(self.layout.active_meta, meta_for(backup_path))
                backup_created = True
        atomic_write_json(self.layout.journal, {
            "new_version": source.version, "new_sha256": source.sha256,
            "previous_version": version_of(backup_path) if backup_path else None,
            "reason": reason,
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
        out = {"changed": True, "previous": _brief(previous), "current": _brief(source),
               "backup_created": backup_created, "pruned": pruned}
        if state.state != "ok":
            out["repaired"] = {"active_was": state.state, "detail": state.detail,
                               "quarantined": str(quarantined) if quarantined else None}
        return out

    def promote(self, candidate: Path, *, prune: bool = True) -> dict[str, Any]:
        """Make a verified candidate active, keeping the previous one as a backup."""
        with self.lock("promote"):
            return self._install(self.verify(candidate), reason="promote", prune=prune)

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

    def trusted_backups(self) -> list[Artifact]:
        """Backups whose signature and sha256s check out, oldest first."""
        return self._sorted_backups()[0]

    def _sorted_backups(self) -> tuple[list[Artifact], dict[str, str]]:
        """(trusted backups oldest first, version -> why each other one is refused)."""
        good, bad = [], {}
        for b in self.backups():
            try:
                good.append(self.verify(b.pkl))
            except IntegrityError as exc:
                bad[version_of(b.pkl) or b.pkl.name] = str(exc)
                log.warning("ignoring backup %s: %s", b.pkl.name, exc)
        return good, bad

    def resolve_backup(self, to: str = "latest") -> Artifact:
        """``latest``: the newest trusted backup older than the active model; or a version.

        "Older" is by version (a timestamp), so running ``rollback`` again walks
        further back instead of returning to the model just left. With no trusted
        active model, ``latest`` is the newest trusted backup. A backup that does
        not check out is skipped with a warning, or refused by name when asked for.
        """
        if to != "latest" and not VERSION_RE.match(to):
            raise UsageError(f"--to must be 'latest' or a version YYYYMMDD-HHMMSS, not {to!r}")
        backups, bad = self._sorted_backups()
        if to in bad:
            raise IntegrityError(bad[to])
        if not backups:
            if bad:
                raise IntegrityError("no backup checks out: " + "; ".join(bad.values()))
            raise UsageError(f"no backups in {self.layout.backups}: nothing to roll back to")
        if to != "latest":
            for b in backups:
                if b.version == to:
                    return b
            raise UsageError(f"no backup with version {to!r}; available: "
                             f"{', '.join(b.version for b in backups)}")
        active = self.inspect_active().artifact
        if active is None:
            return backups[-1]
        older = [b for b in backups if b.version < active.version]
        if not older:
            newer = ", ".join(b.version for b in backups if b.version > active.version)
            raise UsageError(f"no backup older than the active model {active.version}"
                             + (f"; newer ones: {newer} (use --to VERSION)" if newer else ""))
        return older[-1]

    def rollback(self, to: str = "latest") -> dict[str, Any]:
        """Verify a backup (signature, sha256s; no unpickling) and make it active."""
        with self.lock("rollback"):
            self.recover()
            art = self.resolve_backup(to)
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


def check_permissions(root: Path) -> None:
    """Refuse a world-writable store root; warn when others could write it.

    Whoever can write the root can replace models (signatures stop them from
    running forged ones, but not from deleting or swapping good ones).
    """
    try:
        st = root.stat()
    except FileNotFoundError:
        return
    if st.st_mode & 0o002 and not st.st_mode & 0o1000:
        raise IntegrityError(f"{root} is world-writable (mode {st.st_mode & 0o7777:o}); "
                             f"run `chmod o-w {root}` before using it as a model store")
    if st.st_mode & 0o020:
        log.warning("%s is group-writable (mode %o): every member of its group can "
                    "replace models", root, st.st_mode & 0o7777)
    if st.st_uid not in (os.geteuid(), 0):
        log.warning("%s is owned by uid %d, not by this user (%d)", root, st.st_uid,
                    os.geteuid())


def _brief(art: Artifact | None) -> dict[str, Any] | None:
    if art is None:
        return None
    return {"version": art.version, "sha256": art.sha256}
