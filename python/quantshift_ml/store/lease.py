"""A time-bounded lease that spans a whole multi-step, multi-host operation.

``StoreLock`` (flock) protects one process's critical section. A fleet retrain
or rollback driven by Ansible is many processes over minutes (train, fetch,
copy to each host, restart, verify), so it takes a lease on the primary: a file
holding owner, time and expiry. A second retrain is refused while the lease is
live; a lease left behind by a killed controller expires after ``ttl`` seconds
(stale detection), or is taken over at once when the caller proves its holder
is dead (``takeover``).

Every read-modify-write of the lease happens under an flock on a sidecar file,
and a new lease appears with its full content in one step (temp file + link),
so two controllers can never both believe they hold it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quantshift_ml import defaults
from quantshift_ml.errors import LockHeld

DEFAULT_TTL = defaults.LEASE_TTL


@contextlib.contextmanager
def _guard(path: Path) -> Iterator[None]:
    """Serialise lease updates (blocking: they are short).

    The flock is taken on the lease's directory, so no extra file appears in it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(path: Path) -> dict[str, Any] | None:
    """The lease's content, ``None`` when absent; unreadable content counts as live."""
    if path.is_symlink():  # never read through a planted link; refuse until looked at
        return {"owner": "unreadable (symlink)", "expires": float("inf")}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        # never treat a lease we cannot read as expired: refuse until it is looked at
        return {"owner": "unreadable", "expires": float("inf")}
    return data


def _create(path: Path, info: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def acquire(path: Path, owner: str, ttl: float = DEFAULT_TTL, *,
            takeover: str | None = None, details: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """Take the lease for ``owner``; re-entrant for the same owner; refuse a live other.

    ``takeover`` names an owner known to be dead (the caller proved its controller
    process is gone), whose lease is taken over before it expires. ``details``
    (e.g. controller host and pid) are stored for that proof and for messages.
    """
    now = time.time()
    info = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(),
            "acquired": now, "expires": now + ttl, **(details or {})}
    with _guard(path):
        held = _read(path)
        if held is not None:
            if held.get("owner") == owner:
                return {"changed": False, "lease": held, "took_over": None}
            dead = takeover is not None and held.get("owner") == takeover
            if float(held.get("expires", 0)) > now and not dead:
                left = float(held["expires"]) - now
                raise LockHeld(
                    f"another operation holds the lease {path} (owner {held.get('owner')}, "
                    f"from {held.get('controller_host', held.get('host'))}, expires in "
                    f"{'?' if left == float('inf') else int(left)}s); wait for it, or remove "
                    "the file if you are sure it is dead"
                )
        _create(path, info)
        return {"changed": True, "lease": info, "took_over": held}


def release(path: Path, owner: str) -> dict[str, Any]:
    """Release the lease if ``owner`` holds it; a missing lease is not an error."""
    with _guard(path):
        held = _read(path)
        if held is None:
            return {"changed": False}
        if held.get("owner") != owner:
            raise LockHeld(f"lease {path} is held by {held.get('owner')}, not {owner}")
        path.unlink(missing_ok=True)
        return {"changed": True}


def controller_identity() -> dict[str, Any]:
    """This control node and its ``ansible-playbook`` process, for the lease's details.

    Called from a filter, which runs in an Ansible worker: the worker is forked
    from ``ansible-playbook``, so its parent is the process whose death frees
    the lease (a takeover proof that needs no ``/proc`` parsing in YAML).
    """
    return {"controller_host": socket.gethostname(), "controller_pid": os.getppid()}


def dead_holder(held: dict[str, Any] | None, controller_host: str) -> str | None:
    """The owner of ``held`` when its controller ran on this node and is gone, else None.

    Only a lease of this control node can be proven dead (its pid is looked up
    here); any other live lease is left to its TTL.
    """
    if not held or held.get("controller_host") != controller_host:
        return None
    pid = str(held.get("controller_pid", ""))
    if not pid.isdigit() or Path(f"/proc/{pid}").exists():
        return None
    owner = held.get("owner")
    return str(owner) if owner else None


def acquire_or_report(path: Path, owner: str, ttl: float = DEFAULT_TTL, *,
                      takeover: str | None = None, details: dict[str, Any] | None = None,
                      dry_run: bool = False, report: bool = True) -> dict[str, Any]:
    """``acquire``, but a live lease of another owner is returned (``held``), not raised.

    The controller then decides with ``dead_holder`` whether to take it over.
    ``dry_run`` (check mode) only reads the lease. ``report=False``: a held lease
    raises ``acquire``'s ``LockHeld``, naming its holder, as the CLI does.
    """
    if dry_run:
        with _guard(path):
            held = _read(path)
        mine = held is not None and held.get("owner") == owner
        return {"changed": False, "acquired": False,
                "held": None if held is None or mine else _json_safe(held)}
    try:
        return {**acquire(path, owner, ttl, takeover=takeover, details=details),
                "acquired": True, "held": None}
    except LockHeld:
        if not report:
            raise
        with _guard(path):
            held = _read(path)
        return {"changed": False, "acquired": False, "held": _json_safe(held)}


def _json_safe(held: dict[str, Any] | None) -> dict[str, Any] | None:
    """An unreadable lease's infinite expiry as null: module results are JSON."""
    if held is None:
        return None
    return {k: (None if isinstance(v, float) and v == float("inf") else v)
            for k, v in held.items()}
