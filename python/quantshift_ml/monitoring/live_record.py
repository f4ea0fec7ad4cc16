"""The live record: every family's logged answers scored as their bars settle.

The record at training is out of time but ends before the holdout; this one is
what the families did after deployment, on bars none of them had seen. It reads
the prediction log's ``shadows`` table (``serving.service.shadows``: one answer per
symbol, bar, family and release, the served champion's included) and scores each
answer against the settled label of the release's labeler on the monitor's data
(``realised_labels``), pooling the releases as the A/B record does: with weekly
retrains and labels that settle 20 bars later, no single release lives long
enough to be judged alone. Each family is compared with the served answer on the
bars both answered (month-block bootstrap interval of the balanced-accuracy
margin, as every margin in the walk-forward), and the counts say how much of it
is still waiting.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml.monitoring.context import realised_labels
from quantshift_ml.serving import predlog
from quantshift_ml.training import report as rp
from quantshift_ml.training.baselines import balanced_accuracy

SERVED = "served"
"""The row of the answers actually served, whichever family each release's champion was."""

MIN_MONTHS = 2
"""Fewer settled months than this: no interval (a bootstrap of one month says nothing)."""


def _settled(answers: list[predlog.ShadowAnswer], known: dict[str, str | None]
             ) -> tuple[dict[str, dict[tuple[str, str, str], str]], dict[tuple[str, str, str], str],
                        int]:
    """Per family (and ``SERVED``) key -> answer on settled bars; key -> truth; pending."""
    by_family: dict[str, dict[tuple[str, str, str], str]] = defaultdict(dict)
    truth: dict[tuple[str, str, str], str] = {}
    pending: set[tuple[str, str, str]] = set()
    for a in answers:
        key = (a.symbol, a.bar_date, a.model_version)
        label = known.get(a.bar_date)
        if label is None:
            pending.add(key)
            continue
        truth[key] = label
        by_family[a.family][key] = a.regime
        if a.served:
            by_family[SERVED][key] = a.regime
    return by_family, truth, len(pending)


def _row(keys: list[tuple[str, str, str]], answers: dict[tuple[str, str, str], str],
         served: dict[tuple[str, str, str], str], truth: dict[tuple[str, str, str], str]
         ) -> dict[str, Any]:
    """One family's figures on its settled bars, and its margin over the served answers."""
    y = np.asarray([truth[k] for k in keys], dtype=object)
    pred = np.asarray([answers[k] for k in keys], dtype=object)
    out: dict[str, Any] = {"samples": len(keys),
                           "accuracy": round(float(np.mean(y == pred)), 4),
                           "balanced_accuracy": round(balanced_accuracy(y, pred), 4)}
    both = [k for k in keys if k in served]
    months = np.asarray([k[1][:7] for k in both], dtype=object)
    if len(set(months)) >= MIN_MONTHS:
        out["vs_served"] = {"samples": len(both), **rp.margin_interval(
            np.asarray([truth[k] for k in both], dtype=object),
            np.asarray([answers[k] for k in both], dtype=object),
            np.asarray([served[k] for k in both], dtype=object), months)}
    else:
        out["vs_served"] = {"samples": len(both), "margin": None,
                            "reason": f"fewer than {MIN_MONTHS} settled months"}
    return out


def live_record(root: Any, labeler: dict[str, Any], bars: pd.DataFrame,
                symbol: str | None = None) -> dict[str, Any]:
    """Every family's live figures on the settled bars of the log (``symbol``: that one)."""
    answers = [a for a in predlog.shadow_answers(root) if symbol is None or a.symbol == symbol]
    if not answers:
        return {"answers": 0, "pending": 0, "families": {},
                "reason": "no family answers logged yet (a release with shadows must have "
                          "served a request)"}
    by_family, truth, pending = _settled(answers, realised_labels(labeler, bars))
    served = by_family.get(SERVED, {})
    families = {name: _row(sorted(keyed), keyed, served, truth)
                for name, keyed in sorted(by_family.items())}
    versions = sorted({a.model_version for a in answers})
    return {"answers": len(answers), "settled_bars": len(truth), "pending": pending,
            "versions": versions, "families": families,
            "first_bar": answers[0].bar_date, "last_bar": answers[-1].bar_date}
