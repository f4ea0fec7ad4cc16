"""Nagios-style check results shared by the monitor and its drift checks."""

from __future__ import annotations

from typing import Any

OK, WARNING, CRITICAL, UNKNOWN = "OK", "WARNING", "CRITICAL", "UNKNOWN"
EXIT = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}
RANK = {OK: 0, UNKNOWN: 0, WARNING: 1, CRITICAL: 2}
"""Severity for the overall status: UNKNOWN (no number) never raises it."""


def check(name: str, status: str, value: Any, message: str, **extra: Any) -> dict[str, Any]:
    """One check's JSON-native result; ``extra`` keys carry its details."""
    return {"name": name, "status": status, "value": value, "message": message, **extra}
