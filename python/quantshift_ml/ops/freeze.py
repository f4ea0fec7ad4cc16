"""Change freeze: no training or deployment while the market trades.

The old runbook's rule ("don't train during market hours") made enforceable: a
time is frozen when it falls inside an exchange session (the exchange's real
calendar from ``exchange_calendars``: holidays, early closes and DST included,
shipped with the library, no network) widened by a margin before the open and
after the close, or inside an extra window from the fleet settings (FOMC days,
quarter ends). ``until`` is the end of the whole frozen stretch containing the
time (overlapping windows are chained), so a caller knows when to come back.

Settings (group_vars ``quantshift_freeze_*``, CLI flags, or the environment
``QUANTSHIFT_FREEZE_CALENDAR`` / ``_MARGIN`` / ``_EXTRA`` for use outside
Ansible). Extra windows: ``YYYY-MM-DD`` (that whole day in the exchange's time
zone), ``START..END`` with dates or ISO 8601 times (an end date is inclusive),
optionally followed by ``=reason``, e.g. ``2026-12-16=FOMC``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from quantshift_ml.errors import QuantshiftError, UsageError

DEFAULT_CALENDAR = "XNYS"
DEFAULT_MARGIN = dt.timedelta(minutes=30)
ENV_PREFIX = "QUANTSHIFT_FREEZE_"
_MARGIN_RE = re.compile(r"^\s*(\d+)\s*([mh]?)\s*$")


class Frozen(QuantshiftError):
    """The operation would train or deploy inside a change freeze."""

    exit_code = 5


@dataclass(frozen=True)
class Window:
    start: pd.Timestamp
    end: pd.Timestamp
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "reason": self.reason}


def parse_margin(text: str | int | float) -> dt.timedelta:
    """``30`` or ``30m`` minutes, ``2h`` hours."""
    m = _MARGIN_RE.match(str(text))
    if m is None:
        raise UsageError(f"freeze margin {text!r}: give minutes (30, 30m) or hours (2h)")
    value = int(m[1])
    return dt.timedelta(hours=value) if m[2] == "h" else dt.timedelta(minutes=value)


def parse_time(text: str) -> pd.Timestamp:
    """An ISO 8601 time; without an offset it is UTC."""
    try:
        ts = pd.Timestamp(text)
    except ValueError as exc:
        raise UsageError(f"{text!r} is not an ISO 8601 time ({exc})") from exc
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _bound(text: str, tz: str, *, end: bool) -> pd.Timestamp:
    """A window bound: a date is that day's start (or, for an end, the next day's) in ``tz``."""
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = pd.Timestamp(text).tz_localize(tz)
        return (day + pd.Timedelta(days=1) if end else day).tz_convert("UTC")
    ts = pd.Timestamp(text)
    return (ts.tz_localize(tz) if ts.tzinfo is None else ts).tz_convert("UTC")


def parse_window(spec: str | Mapping[str, Any], tz: str) -> Window:
    """``DATE``, ``START..END`` (``=reason`` optional) or ``{start, end, reason}``."""
    if isinstance(spec, str) and spec.lstrip()[:1] in ('{', '"'):  # JSON from Ansible
        try:
            spec = json.loads(spec)
        except ValueError as exc:
            raise UsageError(f"freeze window {spec!r}: not valid JSON ({exc})") from exc
        if not isinstance(spec, (str, Mapping)):
            raise UsageError(f"freeze window {spec!r}: a string or an object")
    if isinstance(spec, Mapping):
        start, end = str(spec["start"]), str(spec.get("end", spec["start"]))
        reason = str(spec.get("reason") or "extra freeze window")
    else:
        body, _, reason = str(spec).partition("=")
        start, _, end = body.partition("..")
        end = end or start
        reason = reason.strip() or "extra freeze window"
    try:
        window = Window(_bound(start, tz, end=False), _bound(end, tz, end=True), reason)
    except (ValueError, KeyError) as exc:
        raise UsageError(f"freeze window {spec!r}: use DATE, START..END or "
                         f"{{start, end, reason}} with ISO 8601 dates or times ({exc})") from exc
    if window.end <= window.start:
        raise UsageError(f"freeze window {spec!r} ends before it starts")
    return window


@dataclass(frozen=True)
class FreezeConfig:
    """The fleet's freeze: the exchange's sessions ± margin, plus extra windows."""

    enabled: bool = True
    calendar: str = DEFAULT_CALENDAR
    margin: dt.timedelta = DEFAULT_MARGIN
    extra: tuple[str | Mapping[str, Any], ...] = field(default_factory=tuple)

    @classmethod
    def from_settings(cls, *, enabled: bool | None = None, calendar: str | None = None,
                      margin: str | int | None = None, extra: Iterable[Any] | None = None,
                      env: Mapping[str, str] | None = None) -> FreezeConfig:
        """Flags win over the environment; no calendar anywhere means no freeze."""
        env = os.environ if env is None else env
        calendar = calendar or env.get(ENV_PREFIX + "CALENDAR") or None
        if enabled is None:
            enabled = calendar is not None
        extras = list(extra or [])
        if not extras and env.get(ENV_PREFIX + "EXTRA"):
            extras = [e for e in re.split(r"[;,\s]+", env[ENV_PREFIX + "EXTRA"]) if e]
        raw_margin = margin if margin is not None else env.get(ENV_PREFIX + "MARGIN")
        return cls(enabled=enabled, calendar=calendar or DEFAULT_CALENDAR,
                   margin=DEFAULT_MARGIN if raw_margin in (None, "") else parse_margin(
                       raw_margin),  # type: ignore[arg-type]
                   extra=tuple(extras))


def _calendar(name: str, at: pd.Timestamp) -> Any:
    import exchange_calendars as xcals

    try:
        with warnings.catch_warnings():  # the library's own pandas deprecations
            warnings.simplefilter("ignore", DeprecationWarning)
            return xcals.get_calendar(name, start=(at - pd.Timedelta(days=10)).date(),
                                      end=(at + pd.Timedelta(days=10)).date())
    except (xcals.errors.InvalidCalendarName, ValueError) as exc:
        raise UsageError(f"freeze calendar {name!r}: {exc}") from exc


def _session_windows(cfg: FreezeConfig, at: pd.Timestamp) -> list[Window]:
    with warnings.catch_warnings():  # the library's own pandas deprecations, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return _sessions(cfg, at)


def _sessions(cfg: FreezeConfig, at: pd.Timestamp) -> list[Window]:
    cal = _calendar(cfg.calendar, at)
    margin = pd.Timedelta(cfg.margin)
    out = []
    for session in cal.sessions:
        open_, close = cal.session_open(session), cal.session_close(session)
        local_close = close.tz_convert(cal.tz).strftime("%H:%M")
        early = " (early close)" if session in cal.early_closes else ""
        out.append(Window(open_ - margin, close + margin,
                          f"{cfg.calendar} session {session.date()} closing {local_close} "
                          f"{cal.tz}{early}, margin {int(margin.total_seconds() // 60)} min"))
    return out


def windows(cfg: FreezeConfig, at: pd.Timestamp) -> list[Window]:
    """Every freeze window near ``at`` (sessions within 10 days, all extra windows)."""
    tz = str(_calendar(cfg.calendar, at).tz)
    return _session_windows(cfg, at) + [parse_window(e, tz) for e in cfg.extra]


def status(cfg: FreezeConfig, at: pd.Timestamp | None = None) -> dict[str, Any]:
    """``{frozen, reason, until, at, calendar}`` for ``at`` (default now)."""
    at = parse_time("now") if at is None else at
    base = {"at": at.isoformat(), "calendar": cfg.calendar if cfg.enabled else None,
            "margin_minutes": int(cfg.margin.total_seconds() // 60)}
    if not cfg.enabled:
        return {**base, "frozen": False, "reason": "freeze disabled", "until": None}
    all_windows = windows(cfg, at)
    hit = [w for w in all_windows if w.start <= at < w.end]
    if not hit:
        return {**base, "frozen": False, "reason": None, "until": None}
    until = max(w.end for w in hit)
    changed = True
    while changed:  # chain windows that overlap the frozen stretch
        later = [w.end for w in all_windows if w.start <= until < w.end]
        changed = bool(later) and max(later) > until
        until = max([until, *later])
    return {**base, "frozen": True, "reason": "; ".join(w.reason for w in hit),
            "until": until.isoformat(), "windows": [w.to_dict() for w in hit]}


def refuse_if_frozen(cfg: FreezeConfig, what: str, *, force: bool = False,
                     at: pd.Timestamp | None = None) -> dict[str, Any]:
    """Raise ``Frozen`` (exit 5) naming the window, its end and the override; or report."""
    st = status(cfg, at)
    if st["frozen"] and not force:
        raise Frozen(f"{what} refused: change freeze ({st['reason']}) until {st['until']}; "
                     "retry after that, or override with --force (-e quantshift_force=true), "
                     "which is logged and alerted")
    return {**st, "overridden": bool(st["frozen"] and force)}


def _cron_field(text: str, low: int, high: int) -> set[int]:
    """Values of one cron field: ``*``, ``*/n``, ``a``, ``a-b``, ``a-b/n``, comma lists."""
    out: set[int] = set()
    for part in str(text).split(","):
        rng, _, step = part.partition("/")
        if rng == "*":
            a, b = low, high
        elif "-" in rng:
            a, b = (int(x) for x in rng.split("-", 1))
        else:
            a = b = int(rng)
        out.update(range(a, b + 1, int(step) if step else 1))
    return out


def next_runs(schedule: Mapping[str, Any], start: pd.Timestamp, days: int = 28,
              tz: str = "UTC") -> list[pd.Timestamp]:
    """The cron schedule's run times (``minute``, ``hour``, ``weekday``) in the next days."""
    try:
        minutes = _cron_field(schedule.get("minute", "*"), 0, 59)
        hours = _cron_field(schedule.get("hour", "*"), 0, 23)
        weekdays = {d % 7 for d in _cron_field(schedule.get("weekday", "*"), 0, 7)}
    except ValueError as exc:
        raise UsageError(f"schedule {dict(schedule)}: not a cron schedule ({exc})") from exc
    local = start.tz_convert(tz)
    day0 = local.normalize()
    runs = []
    for d in range(days + 1):
        day = day0 + pd.Timedelta(days=d)
        if (day.weekday() + 1) % 7 not in weekdays:  # cron: 0 = Sunday
            continue
        for h in sorted(hours):
            for m in sorted(minutes):
                t = day + pd.Timedelta(hours=h, minutes=m)
                if local <= t:
                    runs.append(t.tz_convert("UTC"))
    return runs


def check_schedule(cfg: FreezeConfig, schedule: Mapping[str, Any], *, name: str = "schedule",
                   start: pd.Timestamp | None = None, days: int = 28,
                   tz: str = "UTC") -> dict[str, Any]:
    """The schedule's runs in the next ``days`` that fall inside a freeze."""
    start = parse_time("now") if start is None else start
    frozen = []
    if cfg.enabled:
        for run in next_runs(schedule, start, days, tz):
            st = status(cfg, run)
            if st["frozen"]:
                frozen.append({"at": run.isoformat(), "reason": st["reason"],
                               "until": st["until"]})
    return {"name": name, "schedule": dict(schedule), "timezone": tz, "days": days,
            "frozen_runs": frozen, "ok": not frozen}
