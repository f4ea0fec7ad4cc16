"""The data each page shows, built from what the playbooks and the trainings wrote.

Plain functions returning dicts, so the unit tests check the numbers without a
browser and the templates only lay them out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quantshift_ml.console import charts
from quantshift_ml.console.charts import Series
from quantshift_ml.console.config import ConsoleConfig
from quantshift_ml.console.snapshot import Snapshot, check
from quantshift_ml.console.versions import CLASSES, SERIES, Version, catalogue, compare, find
from quantshift_ml.defaults import FILTER_FAMILIES
from quantshift_ml.errors import UsageError


def _engine(meta: dict[str, Any] | None) -> str:
    """What the service runs for a version: the signed ONNX graph or filter spec, or
    nothing (refused)."""
    if meta is None:
        return "unknown (no metadata on the controller)"
    if meta.get("family") in FILTER_FAMILIES:
        return ("filterspec (signed filter spec)" if isinstance(meta.get("filter"), dict)
                else "none: no signed filter spec, the service refuses it")
    onnx = meta.get("onnx") or {}
    if onnx.get("sha256") and (onnx.get("parity") or {}).get("ok"):
        return "onnxruntime (signed ONNX, parity ok)"
    return "none: no signed compiled form, the service refuses it"


def _host_row(name: str, entry: dict[str, Any], known: dict[str, Version]) -> dict[str, Any]:
    status, monitor = entry.get("status") or {}, entry.get("monitor")
    active = status.get("active") or {}
    version = active.get("version")
    service = check(monitor, "service")
    return {
        "host": name, "version": version, "sha256": active.get("sha256"),
        "file_sha256": active.get("file_sha256"),
        "sha_mismatch": bool(active) and active.get("sha256") != active.get("file_sha256"),
        "integrity": status.get("integrity", "unknown"), "age_days": active.get("age_days"),
        "labeler": active.get("labeler"), "family": active.get("family") or "forest",
        "engine": _engine(known[version].metadata if version in known else None)
        if version else "no active model",
        "backups": [b.get("version") for b in status.get("backups") or []],
        "service": service or {"status": "n/a", "message": "no service check "
                               "(quantshift_service_url is empty for this host)"},
        "monitor": {"status": monitor.get("status"), "time": monitor.get("time")}
        if monitor else None,
    }


def fleet(config: ConsoleConfig, snapshot: Snapshot) -> dict[str, Any]:
    snap = snapshot.fleet()
    known = {v.version: v for v in catalogue(config.artifacts, snap.get("hosts", {}))}
    rows = [_host_row(h, e, known) for h, e in sorted(snap.get("hosts", {}).items())]
    return {"hosts": rows, "refreshed": snap.get("refreshed"),
            "inventory": str(config.inventory), "split": len({r["version"] for r in rows}) > 1}


def host_versions(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each host's active version and sha256, as the job page shows them after an action."""
    return {h: {k: ((e.get("status") or {}).get("active") or {}).get(k)
                for k in ("version", "sha256")} for h, e in snap.get("hosts", {}).items()}


def versions(config: ConsoleConfig, snapshot: Snapshot) -> dict[str, Any]:
    vers = catalogue(config.artifacts, snapshot.fleet().get("hosts", {}))
    names = [v.version for v in vers]
    metric_chart = charts.line_chart(
        "Metrics by version (holdout)", names,
        [Series(label, [v.metric(key) for v in vers], dashed=key in ("baseline", "floor"))
         for label, key in SERIES])
    recall_chart = charts.line_chart(
        "Recall per class by version", names,
        [Series(c, [v.metric(f"recall:{c}") for v in vers]) for c in CLASSES])
    return {"versions": [v.summary() for v in reversed(vers)], "names": names,
            "metric_chart": metric_chart, "recall_chart": recall_chart}


def comparison(config: ConsoleConfig, snapshot: Snapshot, a: str, b: str) -> dict[str, Any]:
    """Two versions side by side; by default the newest and the one before it."""
    vers = catalogue(config.artifacts, snapshot.fleet().get("hosts", {}))
    if len(vers) < 1:
        raise UsageError("no version is known yet: run Train Now or refresh the fleet")
    b = b or vers[-1].version
    a = a or (vers[-2].version if len(vers) > 1 else b)
    left, right = find(vers, a), find(vers, b)
    if left is None or right is None:
        missing = a if left is None else b
        raise UsageError(f"version {missing!r} is not known to the console")
    return {"cmp": compare(left, right), "names": [v.version for v in vers], "a": a, "b": b}


def _reports(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.json")) if directory.is_dir() else []


def _wf_models(report: dict[str, Any]) -> list[str]:
    own = ["model", "champion"] if report.get("champion") else ["model"]
    return [*own, *sorted(report.get("baselines") or {})]


def walkforward(config: ConsoleConfig, name: str | None) -> dict[str, Any]:
    """A walk-forward report as charts: by year, by class, stress periods, halves."""
    names = _reports(config.walkforward)
    if not names:
        raise UsageError(f"no walk-forward report in {config.walkforward}: run "
                         "`quantshift-ml walkforward --json > FILE.json` there")
    chosen = name or ("hmm_default" if "hmm_default" in names else names[0])
    if chosen not in names:
        raise UsageError(f"no walk-forward report named {chosen!r}")
    report = json.loads((config.walkforward / f"{chosen}.json").read_text())
    models = _wf_models(report)
    years = sorted(report.get("per_year") or {})
    by_year = charts.line_chart(
        "Balanced accuracy by year", years,
        [Series(m, [_ba((report["per_year"][y]).get(m)) for y in years],
                dashed=m not in ("model", "champion")) for m in models])
    pools = {"model": report.get("model") or {}, "champion": report.get("champion") or {},
             **(report.get("baselines") or {})}
    recall = charts.bar_chart("Recall per class, all months", list(CLASSES), [
        Series(m, [((pools[m].get("per_class") or {}).get(c) or {}).get("recall")
                   for c in CLASSES]) for m in models])
    periods = sorted(report.get("stress_periods") or {})
    stress = charts.bar_chart("Balanced accuracy in the stress periods", periods, [
        Series(m, [_ba(report["stress_periods"][p].get(m)) for p in periods]) for m in models])
    return {"reports": names, "chosen": chosen, "report": report, "models": models,
            "by_year": by_year, "recall": recall, "stress": stress,
            "overall": {m: pools[m] for m in models}}


def _ba(entry: dict[str, Any] | None) -> float | None:
    value = (entry or {}).get("balanced_accuracy")
    return float(value) if isinstance(value, (int, float)) else None


def monitoring(config: ConsoleConfig, snapshot: Snapshot) -> dict[str, Any]:
    """Live accuracy over the monitor's runs, and each host's newest A/B and drift checks."""
    history = snapshot.monitor_history()
    hosts = sorted({h for line in history for h in line.get("hosts", {})})
    times = [str(line.get("time", ""))[:16] for line in history]
    def values(host: str, metric: str) -> list[float | None]:
        return [((line.get("hosts", {}).get(host) or {}).get(metric) or {}).get("value")
                for line in history]
    live = charts.line_chart("Live accuracy by monitor run", times, [
        Series(f"{h} {m}", values(h, m), dashed=m != "live_accuracy")
        for h in hosts for m in ("live_accuracy", "holdout_accuracy")])
    current = {h: e.get("monitor") for h, e in sorted(snapshot.fleet().get("hosts", {}).items())
               if e.get("monitor")}
    panels = {h: {name: check(rep, name) for name in
                  ("live_accuracy", "ab_test", "input_drift", "importance_drift")}
              for h, rep in current.items()}
    return {"live_chart": live, "runs": len(history), "panels": panels, "reports": current}
