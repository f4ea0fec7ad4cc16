"""The champion policy: which family ships, chosen on an out-of-time record (issue 25).

A record is what every family predicted out of time (each prediction made at its
own monthly cut-off) on the bars of the last ``record_months`` months, scored
against the labels *as known at the decision's cut-off*: a row enters only once
its label has settled (``horizon`` bars), so nothing the decision could not have
known is read. The policy keeps the incumbent family unless another one leads it
on the record's five-regime balanced accuracy by more than ``margin``; among
families within the margin of each other a tie goes to the simpler one (the
order of ``families.RANK``: filters before the forest). With no record yet, or
fewer than ``MIN_RECORD_ROWS`` settled rows, the incumbent stays (the forest for
a new install: today's behaviour). An incumbent outside the field (restricted by
``--families``) gives way to the simplest family within the margin of the best.

Pure functions over arrays; the walk-forward evaluates the policy itself with
them (its ``champion`` row) and training applies them to its own record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from quantshift_ml.champion.families import RANK
from quantshift_ml.model.regimes import REGIMES
from quantshift_ml.training.baselines import balanced_accuracy

RECORD_MONTHS: int | None = None
"""Default record: every month so far (expanding). On both markets of the grid in
docs/model.md a 6-, 12- or 24-month record chose worse than an expanding one: the
families differ by about 0.01 balanced, well inside one year's noise."""
SWITCH_MARGIN = 0.01
"""Default lead a challenger needs over the incumbent's balanced accuracy on the record."""
MIN_RECORD_ROWS = 250
"""Fewer settled rows than about a year: no decision, the incumbent stays (with 60,
three months, the first decisions of the S&P 500 walk-forward cost 0.014 balanced)."""
FIRST_CHAMPION = "forest"

WALKFORWARD_ROWS: dict[str, str] = {"forest": "model", "hmm_filter": "hmm_filter_tuned",
                                    "hmm_range_filter": "hmm_range_tuned"}
"""Each family's row in the walk-forward (the filters were the tuned baselines)."""


def rank(name: str) -> int:
    return RANK[name]


def choose(scores: Mapping[str, float], incumbent: str, margin: float) -> str:
    """The family to ship given each family's record score (module docstring).

    The incumbent stays while it is within ``margin`` of the best score;
    otherwise the simplest family within ``margin`` of the best takes over (so a
    switch always goes to a family that leads the incumbent by more than the
    margin, and a near-tie goes to the simpler family).
    """
    if not scores:
        return incumbent
    best = max(scores.values())
    if incumbent in scores and scores[incumbent] >= best - margin:
        return incumbent
    return min((f for f, s in scores.items() if s >= best - margin), key=rank)


def reason(scores: Mapping[str, float], incumbent: str, chosen: str, margin: float,
           rows: int) -> str:
    """Why ``choose`` kept or switched, in one sentence for the training log and Ansible."""
    if not scores:
        return (f"record too short ({rows} settled rows, need {MIN_RECORD_ROWS}): "
                f"{incumbent} stays")
    best = max(scores, key=lambda f: (scores[f], -rank(f)))
    shown = ", ".join(f"{f} {v:.4f}" for f, v in sorted(scores.items(), key=lambda kv: -kv[1]))
    if chosen == incumbent:
        return (f"{incumbent} stays: within {margin:g} of the best on the record "
                f"({shown})")
    if incumbent not in scores:
        return f"{chosen}: {incumbent} is not in the field; simplest within {margin:g} of the " \
               f"best ({shown})"
    return (f"{chosen} replaces {incumbent}: {incumbent} trails the best, {best}, by "
            f"{scores[best] - scores[incumbent]:.4f} (more than the margin {margin:g}) and "
            f"{chosen} is the simplest family within the margin ({shown})")


def encode(labels: Sequence[object] | np.ndarray) -> np.ndarray:
    """Regime names as int8 codes (-1 where unknown): how the known labels are kept."""
    code = {name: i for i, name in enumerate(REGIMES)}
    return np.asarray([code.get(str(v), -1) for v in labels], dtype=np.int8)


@dataclass(frozen=True)
class Months:
    """The walk-forward's rows: ``pos`` (row positions), ``month`` (the month index of
    each row, 0..n-1) and, per month, the newest row whose label was known at its
    cut-off and the labels known then (codes by position)."""

    pos: np.ndarray
    month: np.ndarray
    known_end: Sequence[int]
    known: Sequence[np.ndarray]


def record_scores(rows: Months, preds: Mapping[str, np.ndarray], k: int,
                  record_months: int | None, min_rows: int = MIN_RECORD_ROWS
                  ) -> tuple[dict[str, float], int]:
    """Each family's balanced accuracy on month ``k``'s record, and its settled rows."""
    lo = 0 if record_months is None else k - record_months
    sel = (rows.month < k) & (rows.month >= lo) & (rows.pos <= rows.known_end[k])
    truth = rows.known[k][rows.pos[sel]]
    ok = truth >= 0
    if int(ok.sum()) < min_rows:
        return {}, int(ok.sum())
    names = np.asarray(REGIMES, dtype=object)[truth[ok]]
    return ({f: balanced_accuracy(names, np.asarray(p, dtype=object)[sel][ok])
             for f, p in preds.items()}, int(ok.sum()))


def evaluate(rows: Months, preds: Mapping[str, np.ndarray], *, record_months: int | None,
             margin: float, min_rows: int = MIN_RECORD_ROWS) -> tuple[np.ndarray, list[str]]:
    """The champion row: each month answered by the family chosen at its cut-off.

    Returns the row's predictions (aligned with ``rows.pos``) and the family of
    each month.
    """
    incumbent = FIRST_CHAMPION if FIRST_CHAMPION in preds else min(preds, key=rank)
    out = np.empty(len(rows.pos), dtype=object)
    chosen: list[str] = []
    for k in range(len(rows.known)):
        scores, _ = record_scores(rows, preds, k, record_months, min_rows)
        incumbent = choose(scores, incumbent, margin)
        chosen.append(incumbent)
        here = rows.month == k
        out[here] = np.asarray(preds[incumbent], dtype=object)[here]
    return out, chosen


def summary(chosen: Sequence[str], families: Sequence[str]) -> dict[str, object]:
    """Share of months each family was champion, and the number of switches."""
    n = max(len(chosen), 1)
    return {"share_of_months": {f: round(sum(c == f for c in chosen) / n, 4) for f in families},
            "switches": int(sum(a != b for a, b in pairwise(chosen)))}


def evaluate_on(rows: Months, preds: Mapping[str, np.ndarray], market: Any, *, outcome: str,
                record_months: int | None, confidence: float, guard: float, horizon: int,
                min_rows: int = MIN_RECORD_ROWS) -> tuple[np.ndarray, list[str]]:
    """``evaluate`` with the choice made on ``outcome`` (``outcome_policy``): each month's
    record holds the rows whose outcome was known at its cut-off (the bar before the
    month: ``known_end + horizon``), and the guard reads the settled-state record."""
    from quantshift_ml.champion import outcome_policy as op

    vals = {f: op.values(outcome, p, rows.pos, market) for f, p in preds.items()}
    incumbent = FIRST_CHAMPION if FIRST_CHAMPION in preds else min(preds, key=rank)
    out = np.empty(len(rows.pos), dtype=object)
    chosen: list[str] = []
    for k in range(len(rows.known)):
        balanced, _ = record_scores(rows, preds, k, record_months, min_rows)
        if balanced:
            incumbent = _decide_month(rows, vals, balanced, incumbent, k, outcome,
                                      record_months, rows.known_end[k] + horizon,
                                      confidence, guard)
        chosen.append(incumbent)
        here = rows.month == k
        out[here] = np.asarray(preds[incumbent], dtype=object)[here]
    return out, chosen


def _decide_month(rows: Months, vals: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  balanced: Mapping[str, float], incumbent: str, k: int, outcome: str,
                  record_months: int | None, cut: int, confidence: float, guard: float
                  ) -> str:
    """One month's decision on the rows of the record whose outcome was known at ``cut``."""
    from quantshift_ml.champion import outcome_policy as op

    lo = 0 if record_months is None else k - record_months
    first = next(iter(vals.values()))
    sel = (rows.month < k) & (rows.month >= lo) & (first[1] <= cut) & ~np.isnan(first[0])
    if int(sel.sum()) < 2:
        return incumbent
    months = rows.month[sel]
    stats = {f: op.statistic(outcome, v[sel]) for f, (v, _) in vals.items()}
    base = vals[incumbent][0][sel] if incumbent in vals else None
    ahead = {f: (op.difference(outcome, v[sel], base, months)["share_ahead"]
                 if base is not None and f != incumbent else 0.0) for f, (v, _) in vals.items()}
    return op.choose(stats, balanced, ahead, incumbent, confidence=confidence, guard=guard)
