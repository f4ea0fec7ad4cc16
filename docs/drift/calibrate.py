"""Where the drift thresholds come from: every month of the bundled S&P 500.

Input drift: for each month of 2001-2018, the month's trading days (the recent
window, as the monitor's ``drift_days`` 21) against the two years before it (the
model's window), with the monitor's own code (``drift.windows``/``input_drift``):
the share of novel features per month, how often each level would fire, how
often the textbook rules (PSI > 0.25, KS p < 0.01) would call a feature drifted,
and, against the walk-forward's own record (``docs/walkforward/hmm_default.json``,
``windows[].month_accuracy``), how often each level fired in the months whose
accuracy fell by more than 0.1 below the mean of the 12 months before (hit rate)
and in the other months (false-alarm rate), for the novelty rule and for the old
PSI-and-KS rule (``shifted``, 0.33 / 0.57).

Importance drift (``--importance``, about 15 minutes on 2 cores): the default model
retrained at every month end of 2003-2018, its holdout SHAP importances (the
metadata's ``importance``) compared with the previous month's.

Usage: ``.venv/bin/python docs/drift/calibrate.py [--importance] > docs/drift/calibration.json``
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml.data.sources import BundledSource
from quantshift_ml.insight.explain import Explainer
from quantshift_ml.model.features import FEATURES, compute_features, usable
from quantshift_ml.monitoring import drift
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.model import regime_model
from quantshift_ml.training.pipeline import train_candidate

WINDOW_ROWS = 504


def _quantiles(s: pd.Series) -> dict[str, float]:
    return {f"p{int(q * 100)}": round(float(s.quantile(q)), 4) for q in (.5, .8, .9, .95, .98)}


def input_months(bars: pd.DataFrame, t: drift.DriftThresholds) -> dict[str, Any]:
    frame = compute_features(bars)[list(FEATURES)]
    frame = frame[usable(frame)]
    months = pd.DatetimeIndex(frame.index).to_period("M")
    shares, shifted, textbook = {}, {}, []
    for month in pd.period_range("2001-01", "2018-12", freq="M"):
        pos = np.flatnonzero(months == month)
        if len(pos) < 10 or pos[0] < WINDOW_ROWS:
            continue
        start = str(frame.index[pos[0] - WINDOW_ROWS].date())
        end = str(frame.index[pos[-1]].date())
        ref, recent = drift.windows(frame, start, end, len(pos), end)
        report = drift.input_drift(ref, recent, t)
        shares[str(month)] = report["share"]
        shifted[str(month)] = float(np.mean([r["shifted"] for r in report["features"]]))
        textbook += [(r["psi"] > 0.25, r["p_value"] < 0.01) for r in report["features"]]
    s = pd.Series(shares)
    tb = np.asarray(textbook)
    return {"months": len(s), "share_quantiles": _quantiles(s),
            "against_accuracy_falls": {
                "novelty": _hits(s, t.drift_warn_share, t.drift_crit_share),
                "old_psi_and_ks": _hits(pd.Series(shifted), 0.33, 0.57)},
            "warning_or_worse": round(float((s >= t.drift_warn_share).mean()), 4),
            "critical": round(float((s >= t.drift_crit_share).mean()), 4),
            "critical_months": {m: v for m, v in shares.items() if v >= t.drift_crit_share},
            "examples": {m: shares[m] for m in ("2008-10", "2011-08", "2018-12", "2017-06",
                                                 "2005-07", "2013-05") if m in shares},
            "textbook_share_of_feature_months": {
                "psi_above_0.25": round(float(tb[:, 0].mean()), 4),
                "ks_p_below_0.01": round(float(tb[:, 1].mean()), 4)}}


def accuracy_falls(path: str = "docs/walkforward/hmm_default.json") -> pd.Series:
    """Per walk-forward month: did its accuracy fall > 0.1 below the 12 months before?"""
    with open(path) as fh:
        windows = json.load(fh)["windows"]
    acc = pd.Series({w["month"]: w["month_accuracy"] for w in windows}, dtype=float)
    before = acc.shift(1).rolling(12, min_periods=6).mean()
    return (before - acc > 0.1)[before.notna()]


def _hits(shares: pd.Series, warn: float, crit: float) -> dict[str, Any]:
    """Share of months each level fired in, with and without an accuracy fall."""
    falls = accuracy_falls()
    common = falls.index.intersection(shares.index)
    fell, s = falls[common].to_numpy(), shares[common].to_numpy()
    out: dict[str, Any] = {"months": len(common), "months_with_a_fall": int(fell.sum()),
                           "thresholds": {"warning": warn, "critical_level": crit}}
    for level, cut in (("warning", warn), ("critical_level", crit)):
        fired = s >= cut
        out[level] = {"fired": round(float(fired.mean()), 4),
                      "hit_rate": round(float(fired[fell].mean()), 4) if fell.any() else None,
                      "false_alarm_rate": round(float(fired[~fell].mean()), 4)}
    return out


def importance_months(bars: pd.DataFrame, t: drift.DriftThresholds) -> dict[str, Any]:
    previous: dict[str, float] | None = None
    rows = []
    for month in pd.period_range("2003-01", "2018-11", freq="M"):
        as_of = str(bars.index[bars.index.to_period("M") == month][-1].date())
        result = train_candidate(bars, TrainConfig(), as_of=as_of)
        now = Explainer(regime_model(result.bundle)).summary(
            result.holdout_features.to_numpy(dtype=float))["mean_abs"]
        if previous is not None:
            cmp = drift.compare_importance(now, previous)
            rows.append({"as_of": as_of, "spearman": cmp["spearman"],
                         "entered": len(cmp["entered"]),
                         "status": drift.importance_status(cmp, t)})
        previous = now
        print(as_of, file=sys.stderr, flush=True)
    df = pd.DataFrame(rows).set_index("as_of")
    return {"pairs": len(df), "spearman_quantiles": {
                f"p{q}": round(float(df.spearman.quantile(q / 100)), 4) for q in (1, 2, 5, 10, 50)},
            "entered_counts": {int(k): int(v) for k, v in df.entered.value_counts().items()},
            "status_share": {k: round(float(v), 4)
                             for k, v in df.status.value_counts(normalize=True).items()},
            "not_ok": df[df.status != "OK"].to_dict(orient="index")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--importance", action="store_true")
    args = ap.parse_args()
    bars, t = BundledSource().load(), drift.DriftThresholds()
    out: dict[str, Any] = {"thresholds": t.__dict__, "input_drift": input_months(bars, t)}
    if args.importance:
        out["importance_drift"] = importance_months(bars, t)
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
