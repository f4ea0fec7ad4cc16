"""Backups: which ones exist, which ones check out, which one a rollback means, pruning.

``latest`` is decided here once for the CLI, the module and the doctor: the
newest trusted backup older than the active model, so running a rollback again
walks further back instead of returning to the model just left.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from quantshift_ml.errors import IntegrityError, UsageError
from quantshift_ml.store.artifact import Artifact
from quantshift_ml.store.checks import load_artifact
from quantshift_ml.store.layout import VERSION_RE, meta_for, onnx_for, version_of

if TYPE_CHECKING:
    from quantshift_ml.store.store import ModelStore

log = logging.getLogger(__name__)


def listed(store: ModelStore) -> list[Artifact]:
    """Backups, oldest first (versions sort chronologically), not yet trusted."""
    out = []
    if store.layout.backups.is_dir():
        for pkl in sorted(store.layout.backups.glob("regime_classifier_*.pkl")):
            if version_of(pkl) is None:
                continue
            try:
                out.append(load_artifact(pkl))
            except IntegrityError as exc:
                log.warning("ignoring backup %s: %s", pkl.name, exc)
    return sorted(out, key=lambda a: version_of(a.pkl) or "")


def sorted_backups(store: ModelStore) -> tuple[list[Artifact], dict[str, str]]:
    """(trusted backups oldest first, version -> why each other one is refused)."""
    good, bad = [], {}
    for b in listed(store):
        try:
            good.append(store.verify(b.pkl))
        except IntegrityError as exc:
            bad[version_of(b.pkl) or b.pkl.name] = str(exc)
            log.warning("ignoring backup %s: %s", b.pkl.name, exc)
    return good, bad


def resolve(store: ModelStore, to: str = "latest") -> Artifact:
    """``latest``: the newest trusted backup older than the active model; or a version.

    With no trusted active model, ``latest`` is the newest trusted backup. A backup
    that does not check out is skipped with a warning, or refused by name when
    asked for.
    """
    if to != "latest" and not VERSION_RE.match(to):
        raise UsageError(f"--to must be 'latest' or a version YYYYMMDD-HHMMSS, not {to!r}")
    backups, bad = sorted_backups(store)
    if to in bad:
        raise IntegrityError(bad[to])
    if not backups:
        if bad:
            raise IntegrityError("no backup checks out: " + "; ".join(bad.values()))
        raise UsageError(f"no backups in {store.layout.backups}: nothing to roll back to")
    if to != "latest":
        for b in backups:
            if b.version == to:
                return b
        raise UsageError(f"no backup with version {to!r}; available: "
                         f"{', '.join(b.version for b in backups)}")
    active = store.inspect_active().artifact
    if active is None:
        return backups[-1]
    older = [b for b in backups if b.version < active.version]
    if not older:
        newer = ", ".join(b.version for b in backups if b.version > active.version)
        raise UsageError(f"no backup older than the active model {active.version}"
                         + (f"; newer ones: {newer} (use --to VERSION)" if newer else ""))
    return older[-1]


def prune(store: ModelStore, *, dry_run: bool = False) -> list[str]:
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
