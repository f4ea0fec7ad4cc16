"""Drift: does the model still lean on the same features, do today's inputs look
like its training window?

**Importance drift** compares the global SHAP importances (mean |SHAP| per
feature on the holdout, written into each version's metadata at training) of
two versions: Spearman's rank correlation over the features both know, and the
features entering or leaving the top 5. A retrain that suddenly ranks the
features differently learned a different model, even when its accuracy looks
the same; that is worth a human look before the next one.

**Input drift** compares, per feature, the most recent ``days`` trading days with
everything the model learned from (``window_start`` .. ``holdout_end`` of its
metadata: training and holdout rows, minus the recent days themselves). It is
evidence, not a page on its own (Evidently's rule: drift is reported beside
quality, and quality decides):

* the decision statistic is **novelty**: the share of the recent bars that lie
  outside the central ``1 - 2 * NOVELTY_TAIL`` (99 %) range of the reference. A
  feature is *novel* when at least ``drift_novel`` of the recent bars are
  outside that range. Novelty is what autocorrelation cannot fake: 21 days of a
  slow moving average inside a trend are one cluster far from the window's
  centre (KS D near 1 in ordinary months), but inside the range the model has
  seen, its trees answer from leaves that saw such values;
* the share of novel features warns at ``drift_warn_share`` (what nine months
  in ten stay below, 2001-2018) and reaches the critical level at
  ``drift_crit_share`` (49 in 50); the check itself is never worse than
  WARNING: the monitor makes it CRITICAL only when an accuracy signal fails as
  well (``monitor.combine_drift``);
* the population stability index (10 bins at the reference's deciles, half a
  count added to every bin) and the two-sample Kolmogorov-Smirnov D and its
  p-value are still reported per feature (``shifted``: PSI >= ``drift_psi`` and
  D >= ``drift_ks``), as descriptions: for 21 overlapping days they are large in
  most months of 1999-2018 (docs/monitoring.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml.monitoring.thresholds import DriftThresholds as DriftThresholds
from quantshift_ml.monitoring.thresholds import Thresholds

TOP_K = 5
PSI_BINS = 10
NOVELTY_TAIL = 0.005
"""Each tail of the reference left out of the range a recent bar must stay inside."""


def importances(meta: dict[str, Any] | None) -> dict[str, float] | None:
    """A version's global SHAP importances (``None`` when it has none: older versions)."""
    imp = ((meta or {}).get("importance") or {}).get("mean_abs")
    return {str(k): float(v) for k, v in imp.items()} if isinstance(imp, dict) else None


def _top(imp: dict[str, float], k: int = TOP_K) -> list[str]:
    return [f for f, _ in sorted(imp.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def _spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rho (average ranks for ties); ``None`` when one side is constant."""
    ra = pd.Series(a).rank().to_numpy()
    rb = pd.Series(b).rank().to_numpy()
    if len(a) < 3 or np.std(ra) == 0 or np.std(rb) == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def compare_importance(current: dict[str, float], previous: dict[str, float]
                       ) -> dict[str, Any]:
    """Rank correlation over the common features and the top-5 changes."""
    common = sorted(set(current) & set(previous))
    rho = _spearman([current[f] for f in common], [previous[f] for f in common])
    top_now, top_then = _top(current), _top(previous)
    return {"spearman": None if rho is None else round(rho, 4), "features": len(common),
            "top": top_now, "previous_top": top_then,
            "entered": [f for f in top_now if f not in top_then],
            "left": [f for f in top_then if f not in top_now]}


def importance_status(cmp: dict[str, Any], t: Thresholds) -> str:
    rho = cmp.get("spearman")
    if rho is None:
        return "UNKNOWN"
    if rho < t.importance_rank_crit:
        return "CRITICAL"
    if rho < t.importance_rank_warn or len(cmp["entered"]) >= t.importance_top_changes:
        return "WARNING"
    return "OK"


def importance_history(metas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each version (oldest first) against the one before it and against the first."""
    known = [(str(m.get("version")), imp) for m in metas if (imp := importances(m))]
    out = []
    for i, (version, imp) in enumerate(known):
        row: dict[str, Any] = {"version": version, "top": _top(imp)}
        if i:
            prev = compare_importance(imp, known[i - 1][1])
            row.update(previous=known[i - 1][0], spearman=prev["spearman"],
                       entered=prev["entered"], left=prev["left"],
                       spearman_vs_first=compare_importance(imp, known[0][1])["spearman"])
        out.append(row)
    return out


def psi(reference: np.ndarray, recent: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of ``recent`` against ``reference``'s deciles."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    ref = np.histogram(reference, edges)[0] + 0.5
    rec = np.histogram(recent, edges)[0] + 0.5
    ref, rec = ref / ref.sum(), rec / rec.sum()
    return float(np.sum((rec - ref) * np.log(rec / ref)))


def feature_drift(reference: pd.DataFrame, recent: pd.DataFrame, t: Thresholds
                  ) -> list[dict[str, Any]]:
    """Novelty, PSI, KS D and p-value per feature, novel ones first."""
    from scipy.stats import ks_2samp

    rows: list[dict[str, Any]] = []
    for f in reference.columns:
        ref = reference[f].to_numpy(dtype=float)
        rec = recent[f].to_numpy(dtype=float)
        ks = ks_2samp(ref, rec)
        p, d, new = psi(ref, rec), float(ks.statistic), novelty(ref, rec)
        rows.append({"feature": str(f), "novelty": round(new, 4), "psi": round(p, 4),
                     "ks": round(d, 4), "p_value": float(f"{float(ks.pvalue):.4g}"),
                     "shifted": bool(p >= t.drift_psi and d >= t.drift_ks),
                     "drifted": bool(new >= t.drift_novel)})
    rows.sort(key=lambda r: (-r["drifted"], -r["novelty"], -r["ks"]))
    return rows


def novelty(reference: np.ndarray, recent: np.ndarray, tail: float = NOVELTY_TAIL) -> float:
    """Share of ``recent`` outside the reference's central ``1 - 2 * tail`` range."""
    lo, hi = np.quantile(reference, [tail, 1.0 - tail])
    return float(np.mean((recent < lo) | (recent > hi))) if len(recent) else 0.0


def _span(frame: pd.DataFrame) -> dict[str, Any]:
    idx = pd.DatetimeIndex(frame.index)
    return {"start": str(idx[0].date()), "end": str(idx[-1].date()), "rows": len(frame)}


def windows(frame: pd.DataFrame, start: str, end: str, days: int, as_of: str | None = None
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference rows in ``start..end`` before the recent ones, the ``days`` newest rows)."""
    idx = pd.DatetimeIndex(frame.index)
    upto = frame[idx <= pd.Timestamp(as_of)] if as_of else frame
    recent = upto.iloc[-days:] if days > 0 else upto.iloc[:0]
    ref_idx = pd.DatetimeIndex(upto.index)
    mask = (ref_idx >= pd.Timestamp(start)) & (ref_idx <= pd.Timestamp(end))
    if len(recent):
        mask &= ref_idx < pd.DatetimeIndex(recent.index)[0]
    return upto[mask], recent


def input_drift(reference: pd.DataFrame, recent: pd.DataFrame, t: Thresholds
                ) -> dict[str, Any]:
    """The input-drift report and its status (OK / WARNING / CRITICAL / UNKNOWN)."""
    if len(reference) < 2 * PSI_BINS or len(recent) < max(5, t.drift_days // 2):
        return {"status": "UNKNOWN", "share": None, "drifted": [], "features": [],
                "reason": f"{len(reference)} reference and {len(recent)} recent rows "
                          f"(need {2 * PSI_BINS} and {max(5, t.drift_days // 2)})"}
    rows = feature_drift(reference, recent, t)
    drifted = [r["feature"] for r in rows if r["drifted"]]
    share = len(drifted) / len(rows) if rows else 0.0
    status = "WARNING" if share >= t.drift_warn_share else "OK"  # never CRITICAL alone
    return {"status": status, "share": round(share, 4), "drifted": drifted, "features": rows,
            "critical_level": bool(share >= t.drift_crit_share),
            "reference": _span(reference), "recent": _span(recent)}

