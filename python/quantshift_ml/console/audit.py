"""The console's audit log: one JSON line per login and per action (who, what, when, result).

Appended with ``O_NOFOLLOW`` like every other log of the project, and never given
a password, a token or a hash: callers pass only names, versions and outcomes.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from quantshift_ml.store.files import append_text


def now() -> str:
    """UTC now, to the second: the audit lines, the jobs and the snapshot all use it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def json_lines(path: Path, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` JSON lines of ``path``, oldest first; a bad line is skipped."""
    if not path.is_file():
        return []
    out: list[dict[str, Any]] = []
    for raw in path.read_text().splitlines()[-limit:]:
        try:
            out.append(json.loads(raw))
        except json.JSONDecodeError:
            continue
    return out


def record(path: Path, user: str, action: str, result: str, **details: Any) -> dict[str, Any]:
    """Append one line and return it (the tests and the audit page read the same dict)."""
    line = {"time": now(),
            "user": user, "action": action, "result": result, **details}
    path.parent.mkdir(parents=True, exist_ok=True)
    append_text(path, json.dumps(line, sort_keys=True, default=str) + "\n", mode=0o600)
    return line


def tail(path: Path, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` lines, newest first."""
    return json_lines(path, limit)[::-1]
