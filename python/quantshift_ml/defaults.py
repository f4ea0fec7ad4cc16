"""The package's own defaults, in one place.

The CLI's flags, the Ansible modules' options and the store read their defaults
here, so a default is changed once; the fleet's values live in
``playbooks/group_vars/all.yml`` and override these only where they differ.
Why each gate default is what it is: ``gate.py`` and docs/model.md.
"""

from __future__ import annotations

from typing import Any

ROOT = "/opt/quantshift"
"""Store root on a host (``--root``, ``$QUANTSHIFT_ROOT``), the old runbook's path."""
KEYS_DIR = "/etc/quantshift/keys"
"""Keys directory (``--keys``, ``$QUANTSHIFT_KEYS``): trusted/*.pub, signing.key."""
KEEP_BACKUPS = 3
KEEP_LOGS = 10
LEASE_TTL = 2 * 3600
"""Seconds after which a fleet lease left by a dead controller is stale."""
SERVICE_TIMEOUT = 60
"""Seconds a rollout waits for the service to report the new model's sha256."""
SOURCE = "bundled"
SYMBOL = "SPY"
MAX_CACHE_AGE_HOURS = 72.0
"""yfinance: how old a cached download may be when Yahoo cannot be reached."""
LABELER = "hmm"
HMM_FILTER = "hmm_filter"
"""Model input of the ``hmm`` labeler: the regime HMM's causal P(turbulent) at t (here,
not in ``features``, so the service names it without importing pandas)."""
LABELERS = ("forward", "hmm", "rules")
"""The labelers' names (``labels.LABELERS`` builds them; the parser needs only names)."""
YEARS = 2.0
"""The rolling window, in years."""
GAP = 21
"""Embargo in bars between training and holdout rows (>= the labels' horizon, 20)."""
FAMILIES: tuple[str, ...] = ("hmm_filter", "hmm_range_filter", "forest")
"""The families that compete at every training, simplest first (``training.families``)."""
FILTER_FAMILIES: tuple[str, ...] = ("hmm_filter", "hmm_range_filter")
"""The families served from a signed JSON spec (``filterspec``), not from ONNX."""
RECORD_MONTHS = 12
"""Months of the champion's record re-fitted at a training (``training.record``)."""
SWITCH_MARGIN = 0.01
"""Balanced-accuracy lead over the incumbent family a challenger needs (docs/model.md)."""
CHAMPION_OUTCOME = "economic"
"""The outcome the champion is chosen on (the A/B test's primary outcome; issue 31)."""
CHAMPION_OUTCOMES: tuple[str, ...] = ("economic", "forward_vol", "forward_drawdown",
                                      "settled_state")
SWITCH_CONFIDENCE = 0.8
"""Share of month-block bootstrap draws in which a challenger must beat the incumbent."""
CHAMPION_GUARD = 0.05
"""How far below the best family's record balanced accuracy a champion may be."""
SERVICE_PORT = 8787
CONSOLE_IDLE_MINUTES = 30.0
"""A console session with no request for this long ends (``--idle-minutes``,
``$QUANTSHIFT_CONSOLE_IDLE_MINUTES``; fleet: ``quantshift_console_idle_minutes``)."""
CONSOLE_SESSION_HOURS = 8.0
"""A console session ends this long after its login, however active (absolute timeout)."""

MAX_REGRESSION = 0.05
"""How far a candidate may trail the production model on the same holdout."""
GATE_BY_LABELER: dict[str, dict[str, Any]] = {
    "hmm": {"metric": "balanced_accuracy", "floor": 0.0, "beat_baseline": "strongest",
            "baseline_tolerance": 0.15},
    "forward": {"metric": "balanced_accuracy", "floor": 0.0, "beat_baseline": "strongest",
                "baseline_tolerance": 0.10},
    "rules": {"metric": "test_accuracy", "floor": 0.75, "beat_baseline": "majority",
              "baseline_tolerance": 0.0},
}
"""Each labeler's gate (metric, absolute floor, baseline and tolerance)."""


def floors_text() -> str:
    """Each labeler's floor as ``NAME FLOOR, ...``: help texts read it, never restate it."""
    return ", ".join(f"{name} {gate['floor']}" for name, gate in GATE_BY_LABELER.items())
