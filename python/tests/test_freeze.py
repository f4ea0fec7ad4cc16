"""Change freeze (issue 17): pinned clocks against the real XNYS calendar, no network."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from quantshift_ml.cli import dispatch as cli
from quantshift_ml.errors import UsageError
from quantshift_ml.ops.freeze import (
    FreezeConfig,
    Frozen,
    check_schedule,
    next_runs,
    parse_margin,
    parse_time,
    refuse_if_frozen,
    status,
)

NYSE = FreezeConfig(calendar="XNYS", margin=parse_margin("30m"))


def at(text: str) -> dict:
    return status(NYSE, parse_time(text))


def _cli(*args: str) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main([*args, "--json"])
    return code, json.loads(out.getvalue().strip().splitlines()[-1])


def test_weekday_session_is_frozen_until_the_close_plus_margin() -> None:
    st = at("2026-11-30T10:00:00-05:00")  # Monday 10:00 New York
    assert st["frozen"] and "XNYS session 2026-11-30" in st["reason"]
    assert parse_time(st["until"]) == parse_time("2026-11-30T16:30:00-05:00")


def test_the_margin_freezes_before_the_open_and_after_the_close() -> None:
    assert at("2026-11-30T09:05:00-05:00")["frozen"]  # open 09:30, margin 30 min
    assert not at("2026-11-30T08:55:00-05:00")["frozen"]
    assert at("2026-11-30T16:25:00-05:00")["frozen"]
    assert not at("2026-11-30T16:35:00-05:00")["frozen"]


def test_thanksgiving_is_not_a_session() -> None:
    assert not at("2026-11-26T12:00:00-05:00")["frozen"]


def test_early_close_ends_the_freeze_at_13_00_plus_margin() -> None:
    st = at("2026-11-27T12:00:00-05:00")
    assert st["frozen"] and "closing 13:00" in st["reason"] and "early close" in st["reason"]
    assert parse_time(st["until"]) == parse_time("2026-11-27T13:30:00-05:00")
    assert not at("2026-11-27T14:00:00-05:00")["frozen"]  # a normal close would still freeze


def test_weekend_is_open_for_work() -> None:
    assert not at("2026-11-29T02:00:00+00:00")["frozen"]  # the default Sunday 02:00 UTC
    assert not at("2026-11-28T15:00:00-05:00")["frozen"]


def test_dst_moves_the_session_in_utc() -> None:
    # 14:00 UTC is 09:00 New York in EST (before the margin) and 10:00 in EDT (trading)
    assert not at("2026-03-06T13:55:00Z")["frozen"]  # Friday, EST: margin starts 14:00 UTC
    assert at("2026-03-09T13:10:00Z")["frozen"]  # Monday after the switch: opens 13:30 UTC
    assert at("2026-11-02T14:10:00Z")["frozen"] and not at("2026-10-30T12:50:00Z")["frozen"]


def test_extra_windows_dates_ranges_and_objects() -> None:
    cfg = FreezeConfig(calendar="XNYS", margin=parse_margin(30), extra=(
        "2026-12-16=FOMC", "2026-12-24..2026-12-26",
        json.dumps({"start": "2026-12-31T14:00:00-05:00", "end": "2026-12-31T18:00:00-05:00",
                    "reason": "year-end"})))
    fomc = status(cfg, parse_time("2026-12-16T20:00:00-05:00"))  # after the close
    assert fomc["frozen"] and fomc["reason"] == "FOMC"
    assert parse_time(fomc["until"]) == parse_time("2026-12-17T00:00:00-05:00")
    xmas = status(cfg, parse_time("2026-12-25T12:00:00-05:00"))
    assert xmas["frozen"] and parse_time(xmas["until"]) == parse_time("2026-12-27T00:00:00-05:00")
    # the session and the year-end window overlap: frozen until the later end
    ye = status(cfg, parse_time("2026-12-31T15:00:00-05:00"))
    assert ye["frozen"] and "year-end" in ye["reason"]
    assert parse_time(ye["until"]) == parse_time("2026-12-31T18:00:00-05:00")
    with pytest.raises(UsageError, match="freeze window"):
        status(FreezeConfig(extra=("2026-13-40",)), parse_time("2026-12-01T00:00:00Z"))


def test_override_is_reported_and_refusal_names_window_end_and_override() -> None:
    t = parse_time("2026-11-30T15:00:00Z")
    with pytest.raises(Frozen, match=r"until 2026-11-30T21:30:00\+00:00.*--force") as exc:
        refuse_if_frozen(NYSE, "train --promote", at=t)
    assert exc.value.exit_code == 5
    assert refuse_if_frozen(NYSE, "train --promote", force=True, at=t)["overridden"]
    assert not refuse_if_frozen(FreezeConfig(enabled=False), "x", at=t)["frozen"]


def test_settings_from_flags_or_environment() -> None:
    assert not FreezeConfig.from_settings(env={}).enabled  # no calendar: no freeze
    cfg = FreezeConfig.from_settings(env={"QUANTSHIFT_FREEZE_CALENDAR": "XNYS",
                                          "QUANTSHIFT_FREEZE_MARGIN": "1h",
                                          "QUANTSHIFT_FREEZE_EXTRA": "2026-12-16=FOMC"})
    assert cfg.enabled and cfg.margin == parse_margin("60") and cfg.extra == ("2026-12-16=FOMC",)
    assert FreezeConfig.from_settings(calendar="XLON", env={}).calendar == "XLON"
    with pytest.raises(UsageError, match="margin"):
        parse_margin("soon")


def test_schedules_inside_a_freeze_are_named() -> None:
    start = parse_time("2026-11-30T00:00:00Z")
    runs = next_runs({"minute": "0", "hour": "2", "weekday": "0"}, start, days=14)
    assert [r.isoformat() for r in runs] == ["2026-12-06T02:00:00+00:00",
                                             "2026-12-13T02:00:00+00:00"]
    assert check_schedule(NYSE, {"minute": "0", "hour": "2", "weekday": "0"}, start=start)["ok"]
    bad = check_schedule(NYSE, {"minute": "30", "hour": "14", "weekday": "1-5"}, start=start,
                         tz="America/New_York")
    assert not bad["ok"] and bad["frozen_runs"][0]["at"] == "2026-11-30T19:30:00+00:00"


def test_cli_freeze_and_promote_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, st = _cli("freeze", "--at", "2026-11-27T12:00:00-05:00", "--calendar", "XNYS")
    assert code == 5 and st["frozen"] and st["until"].startswith("2026-11-27T18:30")
    code, st = _cli("freeze", "--at", "2026-11-26T12:00:00-05:00", "--calendar", "XNYS")
    assert code == 0 and st["frozen"] is False and st["until"] is None
    code, st = _cli("freeze", "--calendar", "XNYS", "--schedule", "0", "2", "0")
    assert code == 0 and st["ok"]
    # promote inside a pinned freeze: an extra window covering now
    now = pd.Timestamp.now(tz="UTC")
    hour = pd.Timedelta(hours=1)
    window = f"{(now - hour).isoformat()}..{(now + hour).isoformat()}=drill"
    code, res = _cli("promote", str(tmp_path / "x.pkl"), "--root", str(tmp_path),
                     "--calendar", "XNYS", "--extra", window)
    assert code == 5 and "drill" in res["error"] and "--force" in res["error"]
    assert not (tmp_path / "models").exists()  # refused before the store was touched
    code, res = _cli("promote", str(tmp_path / "x.pkl"), "--root", str(tmp_path),
                     "--calendar", "XNYS", "--extra", window, "--force")
    assert code == 4  # the override passed the freeze; the (missing) candidate is refused
