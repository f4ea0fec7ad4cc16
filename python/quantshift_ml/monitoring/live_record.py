"""The live record: every family's logged answers scored as their bars settle.

The record at training is out of time but ends before the holdout; this one is
what the families did after deployment, on bars none of them had seen. It reads
the prediction log's ``shadows`` table (``serving.service.shadows``: one answer per
symbol, bar, family and release, the served champion's included) and scores each
answer against the settled label of the release's labeler on the monitor's data
(``realised_labels``), pooling the releases as the A/B record does: with weekly
retrains and labels that settle 20 bars later, no single release lives long
enough to be judged alone. Each family is compared with the champion's answers
on the bars both answered (month-block bootstrap interval of the balanced-accuracy
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

CHAMPION = "champion"
"""The row of each release's champion answers, whichever family each champion was
(the answer the ml arm serves; the rules arm is the A/B report's to judge)."""

MIN_MONTHS = 2
"""Fewer settled months than this: no interval (a bootstrap of one month says nothing)."""

Key = tuple[str, str, str]
"""(symbol, bar date, release): one sample of a family."""


def _settled(answers: list[predlog.ShadowAnswer], known: dict[str, str | None]
             ) -> tuple[dict[str, dict[Key, str]], dict[Key, str], dict[str, int]]:
    """Per family (and ``CHAMPION``) key -> answer on settled bars; key -> truth; and
    the samples still waiting for their label or whose bar the data does not hold."""
    by_family: dict[str, dict[Key, str]] = defaultdict(dict)
    truth: dict[Key, str] = {}
    waiting: dict[str, set[Key]] = {"pending": set(), "not_in_data": set()}
    for a in answers:
        key = (a.symbol, a.bar_date, a.model_version)
        if a.bar_date not in known:  # other or stale data: not a sample (as LiveScore)
            waiting["not_in_data"].add(key)
            continue
        label = known[a.bar_date]
        if label is None:
            waiting["pending"].add(key)
            continue
        truth[key] = label
        by_family[a.family][key] = a.regime
        if a.champion:
            by_family[CHAMPION][key] = a.regime
    return by_family, truth, {k: len(v) for k, v in waiting.items()}


def _row(keys: list[Key], answers: dict[Key, str], champion: dict[Key, str],
         truth: dict[Key, str]) -> dict[str, Any]:
    """One family's figures on its settled samples, and its margin over the champions'."""
    y = np.asarray([truth[k] for k in keys], dtype=object)
    pred = np.asarray([answers[k] for k in keys], dtype=object)
    out: dict[str, Any] = {"samples": len(keys),
                           "accuracy": round(float(np.mean(y == pred)), 4),
                           "balanced_accuracy": round(balanced_accuracy(y, pred), 4)}
    both = [k for k in keys if k in champion]
    months = np.asarray([k[1][:7] for k in both], dtype=object)
    if len(set(months)) >= MIN_MONTHS:
        out["vs_champion"] = {"samples": len(both), **rp.margin_interval(
            np.asarray([truth[k] for k in both], dtype=object),
            np.asarray([answers[k] for k in both], dtype=object),
            np.asarray([champion[k] for k in both], dtype=object), months)}
    else:
        out["vs_champion"] = {"samples": len(both), "margin": None,
                              "reason": f"fewer than {MIN_MONTHS} settled months"}
    return out


def live_record(root: Any, labeler: dict[str, Any], bars: pd.DataFrame,
                symbol: str | None = None) -> dict[str, Any]:
    """Every family's live figures on the log's settled samples (``symbol``: that one's).

    Counts are samples, one per (symbol, bar, release): a bar two releases answered
    is two samples, as in the A/B record.
    """
    answers = [a for a in predlog.shadow_answers(root) if symbol is None or a.symbol == symbol]
    if not answers:
        return {"answers": 0, "settled": 0, "pending": 0, "not_in_data": 0, "families": {},
                "reason": "no family answers logged yet (a release with shadows must have "
                          "served a request)"}
    by_family, truth, waiting = _settled(answers, realised_labels(labeler, bars))
    champion = by_family.get(CHAMPION, {})
    out: dict[str, Any] = {
        "answers": len(answers), "settled": len(truth), **waiting,
        "versions": sorted({a.model_version for a in answers}),
        "first_bar": answers[0].bar_date, "last_bar": answers[-1].bar_date,
        "families": {name: _row(sorted(keyed), keyed, champion, truth)
                     for name, keyed in sorted(by_family.items())}}
    if not truth:
        out["reason"] = (f"nothing settled yet: {waiting['pending']} samples waiting for "
                         f"their label, {waiting['not_in_data']} on bars the data does not "
                         "hold (give the hosts' --source)")
    return out
