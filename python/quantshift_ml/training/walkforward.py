"""Monthly walk-forward: what the product would have done, month by month.

For every month M of the history (once warm-up plus a full window exist), the
model is trained exactly as ``train`` would on the last day before M (trailing
window, holdout, embargo, stress memory), its gate decision is recorded, and it
then predicts every day of M. Labels of M's days are only used for scoring,
never for training: for the ``forward`` labeler the training labels end ``H``
bars before M starts. Baselines are scored on the same days.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml.errors import DataError
from quantshift_ml.features import FEATURES
from quantshift_ml.gate import GATE_METRICS, GateConfig
from quantshift_ml.labels import RulesLabeler, make_labeler
from quantshift_ml.training import evaluate as ev
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.model import fit_forest
from quantshift_ml.training.pipeline import prepare_dataset, split_window

STRESS_PERIODS: dict[str, tuple[str, str]] = {
    "2008-09..2008-12": ("2008-09-01", "2008-12-31"),
    "2011-08..2011-10": ("2011-08-01", "2011-10-31"),
    "2018-02..2018-03": ("2018-02-01", "2018-03-31"),
}


def run_walkforward(bars: pd.DataFrame, config: TrainConfig, gate: GateConfig,
                    *, start: str | None = None, origin: str = "data") -> dict[str, Any]:
    """Run the monthly walk-forward and return a JSON-native report."""
    started = time.monotonic()
    labeler = make_labeler(config.labeler)
    ds = prepare_dataset(bars, labeler)
    idx = pd.DatetimeIndex(ds.features.index)
    lab = ds.labels.to_numpy()
    months = pd.Series(idx.to_period("M"), index=np.arange(len(idx)))
    month_starts = months.groupby(months).head(1).index.to_numpy()
    preds: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    where: list[np.ndarray] = []
    base: dict[str, list[np.ndarray]] = {"rule": [], "persistence": [], "majority": []}
    windows: list[dict[str, Any]] = []
    rule = RulesLabeler()
    gap = config.effective_gap(labeler.horizon)
    for k, first in enumerate(month_starts):
        if start is not None and idx[first] < pd.Timestamp(start):
            continue
        end_known = first - 1 - labeler.horizon  # newest row whose label is known before M
        if end_known < 0:
            continue
        try:
            split = split_window(ds, config, int(end_known), origin=origin)
        except DataError:
            continue  # not enough history yet
        last = month_starts[k + 1] if k + 1 < len(month_starts) else len(idx)
        month = np.arange(first, last)
        month = month[ds.valid[month]]
        if len(month) == 0:
            continue
        tr = np.concatenate([split.stress, split.train])
        x = ds.features.iloc[tr][list(FEATURES)].to_numpy(dtype=float)
        model = fit_forest(x, lab[tr], config.model)
        xh = ds.features.iloc[split.holdout][list(FEATURES)].to_numpy(dtype=float)
        hold = ev.classification_report(lab[split.holdout], model.predict(xh))
        gate_value = hold[GATE_METRICS[gate.metric]]
        xm = ds.features.iloc[month][list(FEATURES)].to_numpy(dtype=float)
        pm = np.asarray(model.predict(xm), dtype=object)
        preds.append(pm)
        truths.append(lab[month])
        where.append(month)
        base["rule"].append(rule.predict_from_features(ds.features.iloc[month]))
        base["persistence"].append(ev.persistence_baseline(lab, month, labeler.horizon))
        base["majority"].append(ev.majority_baseline(lab[tr], len(month)))
        windows.append({"month": str(idx[first].to_period("M")), "gate_value": gate_value,
                        "gate_passed": bool(gate_value >= gate.floor),
                        "month_accuracy": round(ev.accuracy(lab[month], pm), 4)})
    if not preds:
        raise DataError(f"{origin}: history too short for a walk-forward "
                        f"({config.years:g}-year window plus warm-up)")
    y = np.concatenate(truths)
    p = np.concatenate(preds)
    pos = np.concatenate(where)
    dates = pd.DatetimeIndex(idx[pos])
    report: dict[str, Any] = {
        "labeler": {"name": labeler.name, "horizon": labeler.horizon, "params": labeler.params()},
        "config": config.to_dict(),
        "gap_rows": gap,
        "gate": {"metric": gate.metric, "floor": gate.floor},
        "months": len(windows),
        "first_month": windows[0]["month"],
        "last_month": windows[-1]["month"],
        "model": ev.classification_report(y, p),
        "baselines": {k: ev.classification_report(y, np.concatenate(v)) for k, v in base.items()},
        "gate_pass_rate": round(float(np.mean([w["gate_passed"] for w in windows])), 4),
        "per_year": {},
        "stress_periods": {},
        "windows": windows,
    }
    years = dates.year
    for yv in sorted(set(years)):
        m = years == yv
        report["per_year"][str(yv)] = {
            "n": int(m.sum()), "model": round(ev.accuracy(y[m], p[m]), 4),
            **{k: round(ev.accuracy(y[m], np.concatenate(v)[m]), 4) for k, v in base.items()},
        }
    for name, (a, b) in STRESS_PERIODS.items():
        m = (dates >= pd.Timestamp(a)) & (dates <= pd.Timestamp(b))
        if m.any():
            r = ev.classification_report(y[m], p[m])
            report["stress_periods"][name] = {
                "n": int(m.sum()), "accuracy": r["accuracy"],
                "recall": {c: v["recall"] for c, v in r["per_class"].items() if v["support"]},
                **{f"{k}_accuracy": round(ev.accuracy(y[m], np.concatenate(v)[m]), 4)
                   for k, v in base.items()},
            }
    report["seconds"] = round(time.monotonic() - started, 2)
    return report


def with_labeler(config: TrainConfig, labeler: str) -> TrainConfig:
    return replace(config, labeler=labeler)
