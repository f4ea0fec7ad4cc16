"""The training record on every outcome, and the choice on the primary one (issue 31).

``record.decide`` scores the families' record on the settled state; this module
scores the same rows on what the market did after each (``outcome_policy``:
the strategy's daily returns for ``economic``, right/wrong calls for the forward
outcomes), each family against the incumbent family with a month-block
interval, and applies the outcome policy. It also checks the champion on the
record as the gate checks it on the holdout: its primary value not below
``champion_floor`` and not below the incumbent family's (when that one is still
eligible: an incumbent the guard excluded is not a standard to keep).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml.champion import outcome_policy as op
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.pipeline import Dataset


def table(ds: Dataset, dates: list[str], preds: Mapping[str, np.ndarray], incumbent: str
          ) -> dict[str, dict[str, dict[str, Any]]]:
    """outcome -> family -> value, samples and its difference with the incumbent family."""
    market = op.Market.of(ds.bars["Close"])
    pos = pd.DatetimeIndex(ds.features.index).get_indexer(pd.DatetimeIndex(dates))
    months = np.asarray([d[:7] for d in dates])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for outcome in op.OUTCOMES[:-1]:  # settled_state: the record's balanced accuracy
        vals = {f: op.values(outcome, p, pos, market)[0] for f, p in preds.items()}
        known = ~np.isnan(next(iter(vals.values())))
        base = vals.get(incumbent)
        out[outcome] = {}
        for f, v in vals.items():
            entry: dict[str, Any] = {"value": round(op.statistic(outcome, v[known]), 4),
                                     "samples": int(known.sum())}
            if base is not None and f != incumbent:
                entry["vs_incumbent"] = op.difference(outcome, v[known], base[known],
                                                      months[known])
            out[outcome][f] = entry
    return out


def choose(outcomes: Mapping[str, Mapping[str, Mapping[str, Any]]],
           balanced: Mapping[str, float], incumbent: str, config: TrainConfig
           ) -> tuple[str, str]:
    """(family, why) on ``config.champion_outcome``, with the guard and the confidence."""
    rows = outcomes[config.champion_outcome]
    stats = {f: float(e["value"]) for f, e in rows.items()}
    ahead = {f: float((e.get("vs_incumbent") or {}).get("share_ahead", 0.0))
             for f, e in rows.items()}
    chosen = op.choose(stats, balanced, ahead, incumbent, confidence=config.switch_confidence,
                       guard=config.champion_guard)
    best = max(balanced.values())
    shown = ", ".join(f"{f} {stats[f]:.3f} (balanced {balanced[f]:.4f}"
                      + (f", ahead of {incumbent} in {ahead[f]:.0%} of draws)"
                         if f != incumbent else ")") for f in stats)
    if chosen == incumbent:
        why = (f"{incumbent} stays: no family within {config.champion_guard:g} of the best "
               f"balanced accuracy ({best:.4f}) beats it on {config.champion_outcome} in "
               f"{config.switch_confidence:.0%} of draws")
    elif balanced.get(incumbent, -1.0) < best - config.champion_guard:
        why = (f"{chosen} replaces {incumbent}: {incumbent} fell more than "
               f"{config.champion_guard:g} below the best balanced accuracy ({best:.4f})")
    else:
        why = (f"{chosen} replaces {incumbent}: ahead on {config.champion_outcome} in "
               f"{ahead[chosen]:.0%} of draws (needs {config.switch_confidence:.0%})")
    return chosen, f"{why}; record {config.champion_outcome}: {shown}"


def check(outcomes: Mapping[str, Mapping[str, Mapping[str, Any]]],
          balanced: Mapping[str, float], chosen: str, incumbent: str, config: TrainConfig
          ) -> dict[str, Any]:
    """The gate's floor and no-regression, on the primary outcome over the record."""
    rows = outcomes[config.champion_outcome]
    value = float(rows[chosen]["value"])
    eligible = incumbent in balanced and incumbent in rows and \
        balanced[incumbent] >= max(balanced.values()) - config.champion_guard
    inc_value = float(rows[incumbent]["value"]) if eligible else None
    reasons = []
    if config.champion_floor is not None and value < config.champion_floor:
        reasons.append(f"{chosen}'s {config.champion_outcome} on the record {value:.3f} is "
                       f"below the floor {config.champion_floor:g}")
    if inc_value is not None and value < inc_value:
        reasons.append(f"{chosen}'s {config.champion_outcome} on the record {value:.3f} is "
                       f"below the incumbent {incumbent}'s {inc_value:.3f}")
    return {"outcome": config.champion_outcome, "value": round(value, 4),
            "floor": config.champion_floor, "incumbent": incumbent,
            "incumbent_value": None if inc_value is None else round(inc_value, 4),
            "passed": not reasons, "reasons": reasons}
