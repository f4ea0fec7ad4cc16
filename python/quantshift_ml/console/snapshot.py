"""What the console last learned from the hosts, kept between restarts.

The console never reads a host's store itself: ``status.yml`` and ``monitor.yml``
do, and set ``quantshift_status`` / ``quantshift_monitor`` per host. Those facts
are saved here (``fleet.json``, and one line per monitor run in
``monitor.jsonl`` for the live-accuracy chart), so the pages show the newest
known state with its time instead of hitting the fleet on every page view.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quantshift_ml.console.audit import json_lines
from quantshift_ml.store.files import append_text, atomic_write_json, read_json

_MONITOR_KEEP = ("status", "time", "model_version", "exit_code")


class Snapshot:
    """The fleet as of the last ``status.yml`` and the monitor's history."""

    def __init__(self, state: Path) -> None:
        self.fleet_file = state / "fleet.json"
        self.monitor_file = state / "monitor.jsonl"

    def fleet(self) -> dict[str, Any]:
        if not self.fleet_file.is_file():
            return {"refreshed": None, "hosts": {}}
        return read_json(self.fleet_file)

    def save_status(self, when: str, facts: dict[str, dict[str, Any]]) -> None:
        """Replace the hosts' status with what ``status.yml`` just reported."""
        current = self.fleet()
        hosts = current.get("hosts", {})
        for host, host_facts in facts.items():
            if "quantshift_status" in host_facts:
                hosts.setdefault(host, {})["status"] = host_facts["quantshift_status"]
        atomic_write_json(self.fleet_file, {**current, "refreshed": when, "hosts": hosts})

    def save_monitor(self, when: str, facts: dict[str, dict[str, Any]]) -> None:
        """Keep each host's newest monitor report and add one line to the history."""
        reports = {h: f["quantshift_monitor"] for h, f in facts.items()
                   if "quantshift_monitor" in f}
        if not reports:
            return
        current = self.fleet()
        hosts = current.get("hosts", {})
        for host, report in reports.items():
            hosts.setdefault(host, {})["monitor"] = report
        atomic_write_json(self.fleet_file, {**current, "hosts": hosts})
        line = {"time": when, "hosts": {h: _history_entry(r) for h, r in reports.items()}}
        self.monitor_file.parent.mkdir(parents=True, exist_ok=True)
        append_text(self.monitor_file, json.dumps(line, sort_keys=True) + "\n", mode=0o600)

    def monitor_history(self, limit: int = 500) -> list[dict[str, Any]]:
        return json_lines(self.monitor_file, limit)


def _history_entry(report: dict[str, Any]) -> dict[str, Any]:
    """The few numbers the history chart needs from one host's monitor report."""
    checks = {c.get("name"): c for c in report.get("checks", [])}
    entry = {k: report.get(k) for k in _MONITOR_KEEP}
    for name in ("live_accuracy", "holdout_accuracy", "input_drift", "importance_drift",
                 "ab_test"):
        check = checks.get(name) or {}
        entry[name] = {"status": check.get("status"), "value": check.get("value")}
    return entry


def check(report: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    """One named check of a host's monitor report, or None."""
    for item in (report or {}).get("checks", []):
        if item.get("name") == name:
            return dict(item)
    return None
