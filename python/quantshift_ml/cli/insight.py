"""The CLI's ``explain`` and ``drift`` commands and the monitor's threshold options.

Thresholds: every monitor threshold is a field of ``monitoring.thresholds.Thresholds``,
and that module holds their precedence (defaults < the labeler's < the thresholds
file < ``--thresholds-json`` < each ``--<threshold>`` option); this module only
turns the command line into its layers. ``drift_days`` 0 turns the input-drift
check off (it then says UNKNOWN, disabled).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from quantshift_ml.errors import UsageError
from quantshift_ml.monitoring.thresholds import (
    ALL_FIELDS,
    DRIFT_FIELDS,
    Thresholds,
    layered,
    read_values,
)
from quantshift_ml.store import ModelStore

# a function adding a group of shared options (--root/--keys/--json, the data source)
OptionHook = Callable[[argparse.ArgumentParser], None]

THRESHOLDS_FILE = "etc/monitor.json"


def threshold_opts(p: argparse.ArgumentParser, names: tuple[str, ...] = ALL_FIELDS) -> None:
    """``--thresholds FILE`` and one option per threshold in ``names`` (given ones only)."""
    p.add_argument("--thresholds", type=Path, default=None,
                   help=f"JSON object of thresholds (default ROOT/{THRESHOLDS_FILE} if present)")
    p.add_argument("--thresholds-json", default=None, metavar="JSON",
                   help="the same object inline (overrides the file)")
    for f in fields(Thresholds):
        if f.name not in names:
            continue
        kind = float if f.default is None else type(f.default)
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=argparse.SUPPRESS,
                       dest=f"t_{f.name}",
                       help="default: the labeler's (docs/monitoring.md)" if f.default is None
                       else f"default {f.default}")


def thresholds(a: argparse.Namespace, root: Path,
               names: tuple[str, ...] = ALL_FIELDS) -> Thresholds:
    """The command line's layers, in ``thresholds.layered``'s order."""
    path = a.thresholds if a.thresholds is not None else root / THRESHOLDS_FILE
    if a.thresholds is not None and not path.is_file():
        raise UsageError(f"--thresholds {path} does not exist")
    file_values = read_values(path) if path.is_file() else {}
    inline = read_values("--thresholds-json", a.thresholds_json) if a.thresholds_json else {}
    options = {n: getattr(a, f"t_{n}") for n in names if hasattr(a, f"t_{n}")}
    return layered(file_values, inline, options, names=names)


def add_monitor_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None],
                       source_opts: Callable[[argparse.ArgumentParser], None]) -> None:
    """``monitor``: its checks' thresholds are options named after ``Thresholds``."""
    p = sub.add_parser("monitor", help="daily health check (Nagios exit codes 0/1/2/3)")
    common(p)
    source_opts(p)
    p.add_argument("--textfile", type=Path, default=None,
                   help="write a Prometheus textfile for node_exporter (atomically)")
    p.add_argument("--service-url", default=None, help="check URL/healthz")
    p.add_argument("--notify", action="store_true", help="alert on WARNING or CRITICAL")
    p.add_argument("--env-file", type=Path, default=None, help="alert settings (KEY=VALUE)")
    p.add_argument("--no-live", action="store_true",
                   help="skip the checks that read market data (live accuracy, input drift)")
    threshold_opts(p)


def add_parsers(sub: Any, common: OptionHook, source_opts: OptionHook) -> None:
    p = sub.add_parser("explain", help="the active model's regime for one day, with each "
                                       "feature's exact SHAP contribution")
    common(p)
    source_opts(p)
    p = sub.add_parser("drift", help="input drift of the newest days against the model's "
                                     "window, and importance drift over the versions")
    common(p)
    source_opts(p)
    p.add_argument("--reference", default=None, metavar="START..END",
                   help="reference window (default: the active model's window)")
    threshold_opts(p, DRIFT_FIELDS)


def explain_cmd(a: argparse.Namespace, root: Path, source: Any) -> dict[str, Any]:
    from quantshift_ml.insight.explain import explain_active

    store = ModelStore(root)
    art = store.verify(store.layout.active_pkl)
    if (art.meta.get("family") or "forest") != "forest":  # its signed spec: no pickle
        result = _explain_filter(art.meta, source.load(), a.as_of)
        return {**result, "version": art.version, "sha256": art.sha256,
                "source": source.describe()}
    bundle, art = store.load_model(store.layout.active_pkl)  # signature first
    result = explain_active(bundle, source.load(), a.as_of).as_dict()
    return {**result, "version": art.version, "sha256": art.sha256,
            "source": source.describe()}


def _explain_filter(meta: dict[str, Any], bars: Any, as_of: str | None) -> dict[str, Any]:
    """A filter release's answer for the newest bar on or before ``as_of``, in log-odds."""
    import pandas as pd

    from quantshift_ml.model.features import compute_features, usable
    from quantshift_ml.model.filterspec import FilterSpec, explain

    spec = FilterSpec.from_dict(meta.get("filter") or {}, "active model")
    feats = compute_features(bars)
    feats = feats[usable(feats)]
    if as_of:
        feats = feats[pd.DatetimeIndex(feats.index) <= pd.Timestamp(as_of)]
    if feats.empty:
        raise UsageError(f"no usable bar on or before {as_of}")
    day = feats.index[-1]
    return explain(spec, bars.loc[:day], feats)


def _reference(spec: str) -> tuple[str, str]:
    start, sep, end = spec.partition("..")
    if not sep or not start or not end:
        raise UsageError(f"--reference must be START..END (dates), not {spec!r}")
    return start, end


def drift_cmd(a: argparse.Namespace, root: Path, source: Any) -> dict[str, Any]:
    from quantshift_ml.model.features import FEATURES
    from quantshift_ml.monitoring import drift_checks

    t = thresholds(a, root, DRIFT_FIELDS)
    store = ModelStore(root)
    meta: dict[str, Any] = {}
    if store.layout.active_pkl.exists():
        meta = store.verify(store.layout.active_pkl).meta
    elif a.reference is None:
        raise UsageError(f"no active model in {root}: give --reference START..END")
    if a.reference is not None:
        start, end = _reference(a.reference)
        meta = {**meta, "data": {"window_start": start, "holdout_end": end},
                "features": meta.get("features") or list(FEATURES)}
    out: dict[str, Any] = {"input_drift": drift_checks.input_check(meta, source, t, a.as_of),
                           "thresholds": {n: getattr(t, n) for n in DRIFT_FIELDS}}
    if meta.get("version"):
        out["importance_drift"] = drift_checks.importance_check(store, meta, t)
    return out


def render_explain(result: dict[str, Any]) -> str:
    if "terms" in result:  # a filter family: Bayes' rule in log-odds
        lines = [f"{result['date']}: {result['regime']} ({result['family']}, P(turbulent) "
                 f"{result['p_turbulent']:.3f}, cut-off {result['cutoff']:.3f})",
                 f"  prior log-odds    {result['prior_log_odds']:+.4f}  "
                 f"(P {result['prior_p_turbulent']:.3f})"]
        lines += [f"  {t['input']:<18}{t['value'] if t['value'] is not None else 'n/a':>10}  "
                  f"{t['log_likelihood_ratio']:+.4f}" for t in result["terms"]]
        lines.append(f"  posterior log-odds {result['posterior_log_odds']:+.4f}; rule: "
                     + ", ".join(f"{k} {v}" for k, v in result["rule"].items()))
        return "\n".join(lines)
    head = (f"{result['date']}: {result['regime']} (P({result['explained']}) "
            f"{result['probability']:.3f}")
    forest = result.get("forest_probability", result["probability"])
    if result.get("decided_by", "forest") != "forest":  # the max rule: the filter said more
        head += (f" from {result['decided_by']}; the forest's {forest:.3f} = base "
                 f"{result['base_value']:.3f} + contributions)")
    else:
        head += f" = base {result['base_value']:.3f} + contributions)"
    lines = [head]
    for c in result["contributions"][:10]:
        lines.append(f"  {c['feature']:<18}{c['value']:>12.4g}  {c['shap']:+.4f}")
    return "\n".join(lines)


def render_drift(result: dict[str, Any]) -> str:
    rows = []
    for name in ("input_drift", "importance_drift"):
        c = result.get(name)
        if c:
            rows.append(f"{c['status']:<8} {name:<17} {c['message']}")
    for f in (result["input_drift"].get("features") or [])[:10]:
        rows.append(f"  {'*' if f['drifted'] else ' '} {f['feature']:<18} PSI {f['psi']:6.3f}  "
                    f"KS D {f['ks']:.3f}  p {f['p_value']:.2g}")
    return "\n".join(rows)
