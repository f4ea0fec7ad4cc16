"""The monitor's ``importance_drift`` and ``input_drift`` checks (drift.py computes).

Both read only signed metadata and market data: nothing is unpickled, so they
run on every host like the other checks. A check that has nothing to compare
(a first version, a version trained before importances were recorded, too few
rows) says UNKNOWN with the reason and does not raise the overall status.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from quantshift_ml.data.sources import DataSource
from quantshift_ml.errors import QuantshiftError
from quantshift_ml.model.features import model_frame, usable
from quantshift_ml.monitoring import drift
from quantshift_ml.monitoring.checks import check as _check
from quantshift_ml.monitoring.context import RunContext
from quantshift_ml.store import ModelStore


def importance_check(store: ModelStore, meta: dict[str, Any], t: drift.Thresholds,
                     ctx: RunContext | None = None) -> dict[str, Any]:
    """The active version against the newest trusted backup older than it.

    ``ctx``: the monitor run's, whose backups are verified once for every check.
    """
    version = str(meta.get("version"))
    ctx = ctx or RunContext(store.layout.root, store=store)
    history_metas = [b.meta for b in ctx.trusted_backups()
                     if str(b.meta.get("version")) < version]
    history = drift.importance_history([*history_metas, meta])
    now = drift.importances(meta)
    if now is None:
        family = meta.get("family") or "forest"
        why = ((meta.get("importance") or {}).get("error") or (
            f"a {family} release has no SHAP importances (a filter's answer is explained "
            "in log-odds, `quantshift-ml explain`)" if family != "forest" else
            "no SHAP importances in its metadata (trained before they were recorded)"))
        return _check("importance_drift", "UNKNOWN", None, f"unknown: {version}: {why}",
                      history=history)
    previous = next((m for m in reversed(history_metas) if drift.importances(m)), None)
    if previous is None:
        return _check("importance_drift", "UNKNOWN", None,
                      f"unknown: no earlier trusted version with importances to compare "
                      f"{version} with", history=history)
    prev_imp = drift.importances(previous)
    assert prev_imp is not None
    cmp = drift.compare_importance(now, prev_imp)
    status = drift.importance_status(cmp, t)
    moved = "; ".join(p for p in (
        "entered top 5: " + ", ".join(cmp["entered"]) if cmp["entered"] else "",
        "left: " + ", ".join(cmp["left"]) if cmp["left"] else "") if p)
    rho = cmp["spearman"]
    return _check("importance_drift", status, rho,
                  f"rank correlation {'n/a' if rho is None else f'{rho:.3f}'} with "
                  f"{previous.get('version')} (warn < {t.importance_rank_warn:g}, critical < "
                  f"{t.importance_rank_crit:g}, warn at {t.importance_top_changes} new in top "
                  f"5){'; ' + moved if moved else ''}",
                  previous=str(previous.get("version")), comparison=cmp, history=history)


def input_frame(meta: dict[str, Any], source: DataSource, ctx: RunContext | None = None
                ) -> pd.DataFrame:
    """The model's inputs on the monitor's data (``ctx``'s, read once), usable rows only."""
    features = list(meta.get("features") or [])
    bars = ctx.bars() if ctx is not None else source.load()
    frame = model_frame(bars, meta.get("labeler"), meta.get("filter"))
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise QuantshiftError(f"the data cannot provide the model's inputs {missing}")
    frame = frame[features]
    return frame[usable(frame)]


def input_check(meta: dict[str, Any], source: DataSource, t: drift.Thresholds,
                as_of: str | None = None, ctx: RunContext | None = None) -> dict[str, Any]:
    """The newest ``drift_days`` days of the monitor's data against the model's window."""
    if t.drift_days <= 0:
        return _check("input_drift", "UNKNOWN", None, "unknown: disabled (drift_days 0)")
    data = meta.get("data") or {}
    start, end = data.get("window_start"), data.get("holdout_end")
    if not start or not end:
        return _check("input_drift", "UNKNOWN", None, "unknown: no data window in metadata")
    try:
        frame = input_frame(meta, source, ctx)
    except (QuantshiftError, OSError, ValueError) as exc:
        return _check("input_drift", "UNKNOWN", None, f"unknown: {exc}")
    ref, recent = drift.windows(frame, str(start), str(end), t.drift_days, as_of)
    report = drift.input_drift(ref, recent, t)
    if report["status"] == "UNKNOWN":
        return _check("input_drift", "UNKNOWN", None, f"unknown: {report['reason']}", **report)
    names = ", ".join(report["drifted"][:6]) + (" ..." if len(report["drifted"]) > 6 else "")
    r, n = report["recent"], len(report["features"])
    return _check("input_drift", report["status"], report["share"],
                  f"{len(report['drifted'])}/{n} features novel over {r['start']}..{r['end']} "
                  f"vs the model's window (>= {t.drift_novel:.0%} of the bars outside its "
                  f"central 99 %; warn at {t.drift_warn_share:.0%}, critical at "
                  f"{t.drift_crit_share:.0%} only with an accuracy signal failing too)"
                  f"{': ' + names if names else ''}",
                  **{k: v for k, v in report.items() if k != "status"})
