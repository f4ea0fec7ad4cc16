"""A time-bounded lease that spans a whole multi-step, multi-host operation.

``StoreLock`` (flock) protects one process's critical section. A fleet retrain
or rollback driven by Ansible is many processes over minutes (train, fetch,
copy to each host, restart, verify), so it takes a lease on the primary: a file
created with O_EXCL holding owner, time and expiry. A second retrain is refused
while the lease is live; a lease left behind by a killed controller expires
after ``ttl`` seconds (stale detection) and can then be taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from quantshift_ml.errors import LockHeld

DEFAULT_TTL = 2 * 3600


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def acquire(path: Path, owner: str, ttl: float = DEFAULT_TTL, *,
            takeover: str | None = None, details: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """Take the lease for ``owner``; re-entrant for the same owner; refuse a live other.

    ``takeover`` names an owner known to be dead (the caller proved its controller
    process is gone), whose lease is taken over before it expires. ``details``
    (e.g. controller host and pid) are stored for that proof and for messages.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    info = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(),
            "acquired": now, "expires": now + ttl, **(details or {})}
    stale: dict[str, Any] | None = None
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except FileExistsError:
            held = _read(path)
            if held.get("owner") == owner:
                return {"changed": False, "lease": held, "took_over": None}
            dead = takeover is not None and held.get("owner") == takeover
            if float(held.get("expires", 0)) > now and not dead:
                left = int(float(held["expires"]) - now)
                raise LockHeld(
                    f"another operation holds the lease {path} (owner {held.get('owner')}, "
                    f"from {held.get('host')}, expires in {left}s); wait for it, or remove "
                    "the file if you are sure it is dead"
                ) from None
            stale = held
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return {"changed": True, "lease": info,
                "took_over": stale}
    raise LockHeld(f"could not take the lease {path}: contended")


def release(path: Path, owner: str) -> dict[str, Any]:
    """Release the lease if ``owner`` holds it; a missing lease is not an error."""
    held = _read(path)
    if not path.exists():
        return {"changed": False}
    if held.get("owner") not in (owner, None):
        raise LockHeld(f"lease {path} is held by {held.get('owner')}, not {owner}")
    path.unlink(missing_ok=True)
    return {"changed": True}
