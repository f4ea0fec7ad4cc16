"""The CLI's smaller commands (keys, doctor, freeze) and the freeze guard of promotions."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from quantshift_ml.monitoring.alerts import AlertConfig, notify
from quantshift_ml.store import ModelStore, signing

log = logging.getLogger("quantshift_ml")


def keys(a: argparse.Namespace) -> dict[str, Any]:
    ring = signing.Keyring.default()
    if a.action == "generate":
        return signing.generate(ring.directory)
    if a.action == "public":
        key = a.key or ring.signing_key_file
        return {"public_key": signing.public_pem(key).decode(), "key": str(key)}
    return {"keys": str(ring.directory), "trusted": sorted(ring.trusted()),
            "signing_key": ring.require_signer() if ring.can_sign() else None}


def freeze_config(a: argparse.Namespace) -> Any:
    from quantshift_ml.ops.freeze import FreezeConfig

    return FreezeConfig.from_settings(calendar=a.calendar, margin=a.margin, extra=a.extra)


def freeze_cmd(a: argparse.Namespace) -> dict[str, Any]:
    from quantshift_ml.ops import freeze

    cfg = freeze_config(a)
    if a.schedule:
        sched = dict(zip(("minute", "hour", "weekday"), a.schedule, strict=True))
        return freeze.check_schedule(cfg, sched, start=None if a.at is None else
                                     freeze.parse_time(a.at), tz=a.schedule_timezone)
    return freeze.status(cfg, None if a.at is None else freeze.parse_time(a.at))


def guard_freeze(a: argparse.Namespace, root: Path, what: str) -> None:
    """``train --promote`` and ``promote``: refuse inside a freeze unless forced (then alert)."""
    from quantshift_ml.ops import freeze

    st = freeze.refuse_if_frozen(freeze_config(a), what, force=a.force)
    if st["overridden"]:
        subject = f"QuantShift {what} forced inside a change freeze"
        body = f"{st['reason']} until {st['until']}; --force given"
        log.warning("%s: %s", subject, body)
        notify(root, "freeze-override", subject, body, AlertConfig.from_env(dict(os.environ)))


def doctor_cmd(a: argparse.Namespace, root: Path) -> dict[str, Any]:
    from quantshift_ml.ops import doctor

    store = ModelStore(root)
    return doctor.repair(store) if a.repair else doctor.diagnose(store)


def champion_cmd(root: Path, source: Any = None, symbol: str | None = None
                 ) -> dict[str, Any]:
    """The active release's family and the record it was chosen on (signature checked),
    and with ``source`` (a callable making the data source) the live record of every
    family on ``symbol``'s logged answers (``monitoring.live_record``).

    A release trained before families competed has no record: it is a forest,
    chosen by no policy, and says so.
    """
    from quantshift_ml.champion.record import champion_brief

    store = ModelStore(root)
    store.recover_if_interrupted()
    art = store.verify(store.layout.active_pkl)
    decision = champion_brief(art.meta.get("champion"))
    out: dict[str, Any] = {"version": art.version, "sha256": art.sha256,
                           "family": art.meta.get("family") or "forest",
                           "shadows": sorted(art.meta.get("shadows") or {}),
                           "live": None if source is None else _live(root, art.meta, source,
                                                                     symbol)}
    if decision is None:
        return {**out, "chosen_on": None, "record": None,
                "reason": "trained before families competed: a forest, no record"}
    rec = (art.meta.get("champion") or {}).get("record") or {}
    dates = rec.get("dates") or []
    return {**out, **decision, "record": {"months": rec.get("months") or [],
                                          "first_date": dates[0] if dates else None,
                                          "last_date": dates[-1] if dates else None,
                                          "rows": len(dates)}}


def _live(root: Path, meta: dict[str, Any], source: Any, symbol: str | None
          ) -> dict[str, Any]:
    """The live record, or why there is none (data or log unreadable): never a made-up one.

    ``source`` is a callable making the data source, so a bad ``--source`` costs the
    live record, not the rest of the command.
    """
    import sqlite3

    from quantshift_ml.errors import QuantshiftError
    from quantshift_ml.monitoring.live_record import live_record

    try:
        return live_record(root, meta.get("labeler") or {}, source().load(), symbol)
    except (QuantshiftError, sqlite3.Error, OSError, ValueError, KeyError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
