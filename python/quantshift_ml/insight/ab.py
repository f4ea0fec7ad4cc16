"""A/B testing of the model against the rule the bots used before it.

Two arms answer every ``/regime`` request:

* ``ml``: the served model's regime;
* ``rules``: the old same-day rule (``RulesLabeler``: ATR ratio and 50-day SMA
  slope of today's bar), the runbook's rule-based regime.

Both are computed and logged for every request; one is served. The assignment
is deterministic: the first 8 bytes of ``sha256(client | symbol | trading day)``
read as a fraction of 2**64, below ``split`` -> ``ml``, else ``rules``. ``client``
is the ``client`` query parameter the bot passes (``-`` when it passes none), so
one bot gets one arm for all its requests about one bar, and a fresh draw each
trading day (every bot sees both arms over time).

Configuration, read by the service at start and on SIGHUP:

* ``ROOT/etc/ab.json`` ``{"enabled": bool, "split": 0..1, "primary": OUTCOME,
  "outcomes": {...}}``, written by the ``quantshift_service`` role from the
  fleet's ``quantshift_ab_enabled`` / ``quantshift_ab_split`` (off by default:
  everyone gets ``ml``), ``quantshift_ab_primary_outcome`` (the outcome that
  names a winner, default ``economic``) and ``quantshift_outcome_*`` (the
  outcomes' parameters: ``quantshift_ml.outcomes``);
* ``ROOT/data/ab-override.json`` ``{"arm", "reason", "evidence", "at"}``, written
  by ``quantshift-ml ab fallback`` (the automatic fallback of
  ``playbooks/ab_guard.yml``): every request is served that arm until
  ``quantshift-ml ab fallback --clear``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantshift_ml.errors import UsageError
from quantshift_ml.store.files import atomic_write_bytes, read_json

ARMS = ("ml", "rules")
CONFIG_FILE = "etc/ab.json"
OVERRIDE_FILE = "data/ab-override.json"
GUARD_FILE = "data/ab-guard.json"
"""The last automatic action (``{"action", "reason", "at"}``): the A/B record counts
only predictions logged after it, so the same evidence never acts twice."""
NO_CLIENT = "-"


@functools.cache
def _rule() -> Any:
    """The rule's thresholds, built once (the service asks on every request)."""
    from quantshift_ml.model.labels import RulesLabeler

    return RulesLabeler()


def rules_regime(atr_ratio: float, sma50_slope: float) -> str:
    """The old same-day rule on one bar (``RulesLabeler`` with its defaults)."""
    r = _rule()
    if math.isnan(atr_ratio) or math.isnan(sma50_slope):
        raise ValueError("the rule needs atr_ratio and sma50_slope")
    if atr_ratio > r.crisis_atr:
        return "Crisis"
    if atr_ratio > r.high_vol_atr:
        return "High Vol"
    if sma50_slope > r.trend_slope and atr_ratio < r.bull_max_atr:
        return "Bull"
    return "Bear" if sma50_slope < -r.trend_slope else "Low Vol"


def bucket(client: str, symbol: str, day: str) -> float:
    """Where (client, symbol, day) falls in [0, 1): uniform, deterministic."""
    digest = hashlib.sha256(f"{client}\x1f{symbol.upper()}\x1f{day}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


@dataclass(frozen=True)
class AbConfig:
    """Whether A/B is on, its split, and a forced arm (the automatic fallback's)."""

    enabled: bool = False
    split: float = 0.5
    forced: str | None = None
    reason: str = ""
    primary: str = "economic"
    outcomes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from quantshift_ml.outcomes import OUTCOMES

        if self.primary not in OUTCOMES:
            raise UsageError(f"the A/B primary outcome must be one of {', '.join(OUTCOMES)}, "
                             f"not {self.primary!r}")
        self.outcome_config()  # validates the outcomes' parameters
        if not 0.0 <= self.split <= 1.0:
            raise UsageError(f"A/B split must be within 0..1 (share served by ml), "
                             f"not {self.split}")
        if self.forced is not None and self.forced not in ARMS:
            raise UsageError(f"forced arm must be one of {ARMS}, not {self.forced!r}")

    def outcome_config(self) -> Any:
        """The outcomes' parameters (``quantshift_ml.outcomes.OutcomeConfig``)."""
        from quantshift_ml.outcomes import OutcomeConfig

        try:
            return OutcomeConfig(**self.outcomes)
        except TypeError as exc:
            raise UsageError(f"A/B outcomes settings: {exc}") from exc

    def assign(self, client: str, symbol: str, day: str) -> str:
        if self.forced is not None:
            return self.forced
        if not self.enabled:
            return "ml"
        return "ml" if bucket(client or NO_CLIENT, symbol, day) < self.split else "rules"

    @classmethod
    def load(cls, root: Path) -> AbConfig:
        """The host's configuration and override (absent files: A/B off, nothing forced)."""
        cfg_path, ovr_path = Path(root) / CONFIG_FILE, Path(root) / OVERRIDE_FILE
        cfg = _read(cfg_path)
        ovr = _read(ovr_path)
        try:
            return cls(enabled=bool(cfg.get("enabled", False)),
                       split=float(cfg.get("split", 0.5)),
                       forced=ovr.get("arm"), reason=str(ovr.get("reason", "")),
                       primary=str(cfg.get("primary", "economic")),
                       outcomes=dict(cfg.get("outcomes") or {}))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{cfg_path}: {exc}") from exc

    def as_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "split": self.split, "forced": self.forced,
                "reason": self.reason, "primary": self.primary,
                "outcomes": self.outcome_config().as_dict()}


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file() or path.is_symlink():
        return {}
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return data


def set_override(root: Path, arm: str | None, reason: str = "", evidence: str = ""
                 ) -> dict[str, Any]:
    """Force ``arm`` for every request (``None``: clear); the service reads it on SIGHUP."""
    path = Path(root) / OVERRIDE_FILE
    if arm is None:
        existed = path.is_file()
        path.unlink(missing_ok=True)
        return {"changed": existed, "override": None, "path": str(path)}
    if arm not in ARMS:
        raise UsageError(f"--arm must be one of {', '.join(ARMS)}, not {arm!r}")
    current = _read(path)
    if current.get("arm") == arm and current.get("evidence") == evidence:
        return {"changed": False, "override": current, "path": str(path)}
    body = {"arm": arm, "reason": reason, "evidence": evidence,
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(body, sort_keys=True) + "\n").encode(), mode=0o644)
    mark_acted(root, f"serve-{arm}", reason)
    return {"changed": True, "override": body, "path": str(path)}


def mark_acted(root: Path, action: str, reason: str = "") -> dict[str, Any]:
    """Record an automatic action; predictions logged before it no longer count."""
    body = {"action": action, "reason": reason,
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    path = Path(root) / GUARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(body, sort_keys=True) + "\n").encode(), mode=0o644)
    return {"changed": True, "acted": body, "path": str(path)}


def acted_since(root: Path) -> str | None:
    """When the last automatic action happened (ISO time), or None."""
    at = _read(Path(root) / GUARD_FILE).get("at")
    return str(at) if at else None
