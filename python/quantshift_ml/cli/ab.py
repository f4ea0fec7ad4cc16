"""``quantshift-ml ab report | replay | fallback`` (ab.py, ab_report.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantshift_ml import defaults
from quantshift_ml.cli.insight import OptionHook
from quantshift_ml.errors import UsageError


def add_parser(sub: Any, common: OptionHook, source_opts: OptionHook) -> None:
    p = sub.add_parser("ab", help="A/B test of the model against the rules: report, replay, "
                                  "fallback")
    common(p)
    source_opts(p)
    p.add_argument("action", choices=["report", "replay", "fallback", "mark"],
                   help="report: both arms on the settled outcomes since the last automatic "
                        "action; replay: the same over a historical period; fallback: force "
                        "an arm (or --clear); mark: record an automatic action (rollback)")
    p.add_argument("--from", dest="start", default=None, help="replay: first day (YYYY-MM-DD)")
    p.add_argument("--to", dest="end", default=None, help="replay: last day (YYYY-MM-DD)")
    p.add_argument("--clients", type=int, default=20, help="replay: simulated bots per day")
    p.add_argument("--split", type=float, default=0.5, help="replay: share served by ml")
    p.add_argument("--arm", choices=["ml", "rules"], default=None, help="fallback: the arm")
    p.add_argument("--reason", default="", help="fallback: why (kept with the override)")
    p.add_argument("--evidence", default="", help="fallback: what it was decided on")
    p.add_argument("--clear", action="store_true", help="fallback: remove the override")


def run(a: argparse.Namespace, root: Path, source: Callable[[], Any]) -> dict[str, Any]:
    from quantshift_ml.insight import ab
    from quantshift_ml.monitoring import ab_report

    if a.action == "mark":
        if not a.reason:
            raise UsageError("ab mark needs --reason (what was done and why)")
        return ab.mark_acted(root, "rollback", a.reason)
    if a.action == "fallback":
        if a.clear == (a.arm is not None):
            raise UsageError("ab fallback needs exactly one of --arm ARM or --clear")
        return ab.set_override(root, None if a.clear else a.arm, a.reason, a.evidence)
    if a.action == "replay":
        if not a.start or not a.end:
            raise UsageError("ab replay needs --from DATE and --to DATE")
        if a.clients < 1:
            raise UsageError(f"--clients must be >= 1, not {a.clients}")
        ab.AbConfig(split=a.split)  # validates the split
        src = source()
        return ab_report.replay(src.load(), a.start, a.end, clients=a.clients, split=a.split,
                                symbol=getattr(src, "symbol", defaults.SYMBOL),
                                ab_config=ab.AbConfig.load(root))
    return ab_report.host_report(root, source())


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render(result: dict[str, Any]) -> str:
    from quantshift_ml.monitoring.textfile import HEADLINE

    lines = []
    if (rp := result.get("replay")) is not None:
        moved = (f" (asked from {rp['requested_from']}: the first bar with a full training "
                 "window before it)" if rp.get("moved") else "")
        lines.append(f"replay {rp['from']}..{rp['to']}{moved}, model as of "
                     f"{rp['model_as_of']}, {rp['clients']} bots, split {rp['split']}")
    for arm, m in result["arms"].items():
        acc = "n/a" if m["accuracy"] is None else f"{m['accuracy']:.3f}"
        bal = "n/a" if m["balanced_accuracy"] is None else f"{m['balanced_accuracy']:.3f}"
        lines.append(f"{arm:<6} samples {m['samples']:>5}  accuracy {acc}  balanced {bal}")
    for name, o in (result.get("outcomes") or {}).items():
        mark = "*" if name == result.get("primary") else " "
        figure = HEADLINE[name]
        vals = "  ".join(f"{arm} {_fmt(f.get(figure))}" for arm, f in o["arms"].items())
        lines.append(f"{mark}{name:<17} {figure:<17} {vals}  {o['verdict']}")
    lines.append(result["verdict"])
    return "\n".join(lines)
