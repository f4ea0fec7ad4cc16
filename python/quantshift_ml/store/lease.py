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

from quantshift_ml.errors import LockHeld

DEFAULT_TTL = 2 * 3600


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
