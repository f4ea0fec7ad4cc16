"""Backups: which ones exist, which ones check out, which one a rollback means, pruning.

``check`` is the one judgement of a backup, made exactly as a rollback makes it
(``ModelStore.verify``: the metadata's Ed25519 signature against the trusted
keys, the version, the sha256 of the pickle and of the compiled ONNX model);
the monitor, ``backups``/``status``, ``verify --target all``, the doctor and
``resolve`` all read it, so a backup the monitor calls intact is one a rollback
would take, and one it would skip is named everywhere with the same reason.

``latest`` is decided here once for the CLI, the module and the doctor: the
newest trusted backup older than the active model, so running a rollback again
walks further back instead of returning to the model just left.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantshift_ml.errors import IntegrityError, UsageError
from quantshift_ml.store.artifact import Artifact, StoreView
from quantshift_ml.store.checks import load_artifact
from quantshift_ml.store.layout import VERSION_RE, meta_for, onnx_for, version_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackupCheck:
    """One backup file as a rollback judges it.

    ``version`` comes from the file name, so a backup whose metadata cannot be
    read still has a name to report; ``artifact`` is the verified artifact when
    the backup is intact, else ``None`` and ``reason`` says why.
    """

    version: str
    pkl: Path
    artifact: Artifact | None
    reason: str = ""

    @property
    def intact(self) -> bool:
        return self.artifact is not None

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "intact": self.intact, "reason": self.reason or None}


def files(store: StoreView) -> list[Path]:
    """Every backup model file (named with a version), oldest first."""
    if not store.layout.backups.is_dir():
        return []
    found = [p for p in store.layout.backups.glob("regime_classifier_*.pkl") if version_of(p)]
    return sorted(found, key=lambda p: version_of(p) or "")


def check(store: StoreView, pkl: Path) -> BackupCheck:
    """Verify one backup as a rollback would (no unpickling); never raises IntegrityError."""
    version = version_of(pkl) or pkl.name
    try:
        return BackupCheck(version, pkl, store.verify(pkl))
    except IntegrityError as exc:
        return BackupCheck(version, pkl, None, str(exc))


def checked(store: StoreView) -> list[BackupCheck]:
    """Every backup, oldest first, each verified once with ``check``."""
    return [check(store, pkl) for pkl in files(store)]


def listed(store: StoreView) -> list[Artifact]:
    """Backups, oldest first (versions sort chronologically), not yet trusted."""
    out = []
    for pkl in files(store):
        try:
            out.append(load_artifact(pkl))
        except IntegrityError as exc:
            log.warning("ignoring backup %s: %s", pkl.name, exc)
    return out


def sorted_backups(store: StoreView) -> tuple[list[Artifact], dict[str, str]]:
    """(trusted backups oldest first, version -> why each other one is refused)."""
    good, bad = [], {}
    for c in checked(store):
        if c.artifact is not None:
            good.append(c.artifact)
        else:
            bad[c.version] = c.reason
            log.warning("ignoring backup %s: %s", c.pkl.name, c.reason)
    return good, bad


@dataclass(frozen=True)
class Choice:
    """The backup a rollback takes, and those it passed over on the way.

    ``skipped``: ``[{version, reason}]`` of the backups that do not check out and
    sit between the one taken and the active model, i.e. the ones ``latest``
    would have taken had they been intact (an explicit version skips nothing).
    """

    artifact: Artifact
    skipped: list[dict[str, str]]


def resolve(store: StoreView, to: str = "latest") -> Artifact:
    """``latest``: the newest trusted backup older than the active model; or a version."""
    return choose(store, to).artifact


def choose(store: StoreView, to: str = "latest") -> Choice:
    """The backup ``to`` means, and the broken ones ``latest`` skipped to reach it.

    With no trusted active model, ``latest`` is the newest trusted backup. A backup
    that does not check out is skipped (named in ``skipped`` and logged), or
    refused by name when asked for.
    """
    if to != "latest" and not VERSION_RE.match(to):
        raise UsageError(f"--to must be 'latest' or a version YYYYMMDD-HHMMSS, not {to!r}")
    good, bad = sorted_backups(store)
    if to in bad:
        raise IntegrityError(bad[to])
    if not good:
        if bad:
            raise IntegrityError("no backup checks out: " + "; ".join(bad.values()))
        raise UsageError(f"no backups in {store.layout.backups}: nothing to roll back to")
    if to != "latest":
        for b in good:
            if b.version == to:
                return Choice(b, [])
        raise UsageError(f"no backup with version {to!r}; available: "
                         f"{', '.join(b.version for b in good)}")
    active = store.inspect_active().artifact
    ceiling = active.version if active is not None else None
    older = [b for b in good if ceiling is None or b.version < ceiling]
    if not older:
        newer = ", ".join(b.version for b in good if b.version > str(ceiling))
        broken = "; ".join(f"{v}: {why}" for v, why in bad.items() if v < str(ceiling))
        raise UsageError(f"no backup older than the active model {ceiling}"
                         + (f"; newer ones: {newer} (use --to VERSION)" if newer else "")
                         + (f"; older ones that do not check out: {broken}" if broken else ""))
    chosen = older[-1]
    skipped = [{"version": v, "reason": why} for v, why in sorted(bad.items())
               if v > chosen.version and (ceiling is None or v < ceiling)]
    return Choice(chosen, skipped)


def prune(store: StoreView, *, dry_run: bool = False) -> list[str]:
    """Remove backups beyond ``keep_backups`` and staged copies of the active model.

    ``dry_run`` names what would go and removes nothing (check mode).
    """
    backups = sorted(store.layout.backups.glob("regime_classifier_*.pkl"))
    backups = [b for b in backups if version_of(b)]
    old = backups[: max(0, len(backups) - store.keep_backups)]
    removed = [version_of(pkl) or pkl.name for pkl in old]
    if dry_run:
        return removed
    for pkl in old:
        for p in (pkl, meta_for(pkl), onnx_for(pkl)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    staging = store.layout.staging
    for staged in staging.glob("*.pkl") if staging.is_dir() else []:
        active = store.active()
        if active is not None and active.version in staged.name:
            for p in (staged, meta_for(staged), onnx_for(staged)):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
    return removed
