"""The champion's record at training: every family scored out of time (issue 25).

At a training, each family is re-fitted at every monthly cut-off of the last
``record_months`` months before the holdout, exactly as the walk-forward does
(the labels relabelled as known at that cut-off, the same window and split),
and predicts that month. Those predictions, scored against the labels as known
now (every record row is older than the holdout, so settled), are the record
the policy (``champion.choose``) reads.

What can be cached is: a prediction made at a past cut-off never changes, so
the record travels in the signed metadata of each release and the next
training re-fits only the months the previous record lacks (on the same bars,
labeler, window and field; otherwise everything is re-fitted). A fleet's record
thus grows month by month into the expanding record the walk-forward's
``champion`` row evaluates; ``MAX_MONTHS`` bounds the metadata.

Stored compactly: the record rows' dates and, per family, one character per row
(the index of its regime in ``REGIMES``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml import REGIMES
from quantshift_ml.champion import policy as ch
from quantshift_ml.champion import record_outcomes as ro
from quantshift_ml.champion.families import available, family
from quantshift_ml.errors import DataError
from quantshift_ml.training import report as rp
from quantshift_ml.training.baselines import balanced_accuracy
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.pipeline import Dataset, Split, relabel, split_window

log = logging.getLogger(__name__)

MAX_MONTHS = 240
"""Twenty years of monthly predictions (about 5 000 rows, 70 kB of metadata) at most."""
RECORD_FORMAT = 1


@dataclass
class Record:
    """Out-of-time predictions of every family on the record rows (oldest first)."""

    basis: dict[str, Any]
    months: list[str]
    dates: list[str]
    preds: dict[str, str]
    refitted: int = 0
    reused: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"format": RECORD_FORMAT, "basis": self.basis, "months": self.months,
                "dates": self.dates, "predictions": self.preds}


def basis(ds: Dataset, config: TrainConfig, families: list[str]) -> dict[str, Any]:
    """What a cached record's predictions depend on besides the bars."""
    return {"labeler": ds.labeler.name, "years": config.years, "families": families,
            "estimator": config.estimator, "combine": config.combine,
            "memory": config.memory_for(ds.labeler.name)}


def _encode(regimes: np.ndarray) -> str:
    return "".join(str(REGIMES.index(str(r))) for r in regimes)


def _decode(codes: str) -> np.ndarray:
    return np.asarray([REGIMES[int(c)] for c in codes], dtype=object)


def _span(ds: Dataset, split: Split, months: int) -> list[tuple[str, np.ndarray]]:
    """(month, labeled row positions) of the ``months`` full months before the holdout."""
    idx = pd.DatetimeIndex(ds.features.index)
    first_hold = int(split.holdout[0])
    period = idx.to_period("M")
    last = period[first_hold] - 1  # the holdout's own month is not in the record
    out = []
    for k in range(months, 0, -1):
        m = last - (k - 1)
        rows = np.nonzero((period == m) & ds.valid)[0]
        rows = rows[rows < first_hold]
        if len(rows):
            out.append((str(m), rows))
    return out


def _month(ds: Dataset, config: TrainConfig, families: list[str], rows: np.ndarray,
           warm: Any, origin: str) -> tuple[dict[str, np.ndarray], Any]:
    """Every family fitted at the cut-off before ``rows`` (as then known), predicting them."""
    cutoff = int(rows[0]) - 1
    known = ds if ds.fitted is None else relabel(ds, cutoff, warm=warm)
    split = split_window(known, config, cutoff - known.labeler.horizon, origin=origin)
    train = np.concatenate([split.stress, split.train])
    out = {f: family(f).fit(known, train, config, gap=split.gap).predict(known, rows).regimes
           for f in families}
    return out, known.fitted


def _reusable(previous: Mapping[str, Any] | None, want: dict[str, Any]
              ) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Month -> (dates, codes per family) of a previous record built on the same basis."""
    if not previous or previous.get("format") != RECORD_FORMAT or previous.get("basis") != want:
        return {}
    dates, preds = list(previous.get("dates") or []), previous.get("predictions") or {}
    out: dict[str, tuple[list[str], dict[str, str]]] = {}
    for m in previous.get("months") or []:
        sel = [i for i, d in enumerate(dates) if d.startswith(m)]
        out[m] = ([dates[i] for i in sel],
                  {f: "".join(str(preds[f])[i] for i in sel) for f in want["families"]})
    return out


def build(ds: Dataset, split: Split, config: TrainConfig, *, families: list[str],
          months: int, previous: Mapping[str, Any] | None = None, origin: str = "data"
          ) -> Record:
    """The record for this training: the previous one's months where they still hold,
    plus the months of the last ``months`` it lacks, re-fitted (module docstring)."""
    want = basis(ds, config, families)
    cached = _reusable(previous, want)
    idx = pd.DatetimeIndex(ds.features.index)
    span = _span(ds, split, months)
    start = span[0][0] if span else None
    keep = sorted(m for m in cached if start is None or m < start)
    keep = keep[max(0, len(keep) - max(0, MAX_MONTHS - len(span))):]
    rec = Record(want, [], [], {f: "" for f in families})
    for m in keep:
        _append(rec, m, *cached[m])
        rec.reused += 1
    warm = None
    for m, rows in span:
        dates = [str(d.date()) for d in idx[rows]]
        if m in cached and cached[m][0] == dates:
            _append(rec, m, dates, cached[m][1])
            rec.reused += 1
            continue
        try:
            preds, warm = _month(ds, config, families, rows, warm, origin)
        except DataError:  # not enough history before this month: not in the record
            continue
        _append(rec, m, dates, {f: _encode(p) for f, p in preds.items()})
        rec.refitted += 1
    return rec


def _append(rec: Record, month: str, dates: list[str], codes: Mapping[str, str]) -> None:
    rec.months.append(month)
    rec.dates += dates
    for f in rec.preds:
        rec.preds[f] += codes[f]


def _settled(ds: Dataset, rec: Record) -> np.ndarray:
    """Which record rows have a known label now (the rows ``scores`` reads)."""
    pos = pd.DatetimeIndex(ds.features.index).get_indexer(pd.DatetimeIndex(rec.dates))
    ok = pos >= 0
    ok[ok] = ds.valid[pos[ok]]
    return ok


def scores(ds: Dataset, rec: Record) -> tuple[dict[str, dict[str, Any]], np.ndarray,
                                              dict[str, np.ndarray]]:
    """Each family's balanced accuracy on the record against the labels known now, with a
    month-block 95 % interval; also the truth and the predictions (for the decision)."""
    pos = pd.DatetimeIndex(ds.features.index).get_indexer(pd.DatetimeIndex(rec.dates))
    ok = _settled(ds, rec)
    y = ds.labels.to_numpy()[pos[ok]] if len(pos) else np.empty(0, dtype=object)
    month_id = np.asarray([d[:7] for d in np.asarray(rec.dates, dtype=object)[ok]])
    preds = {f: _decode(c)[ok] for f, c in rec.preds.items()}
    out: dict[str, dict[str, Any]] = {}
    for f, p in preds.items():
        out[f] = {"balanced_accuracy": round(balanced_accuracy(y, p), 4) if len(y) else None,
                  **(rp.score_interval(y, p, month_id) if len(y) else {})}
    return out, y, preds


def decide(ds: Dataset, split: Split, config: TrainConfig, *, incumbent: str,
           previous: Mapping[str, Any] | None, origin: str = "data") -> dict[str, Any]:
    """Build the record, score it and apply the policy: the champion section of the metadata."""
    started = time.monotonic()
    field_ = available(ds, list(config.families))
    if len(field_) == 1:  # a field of one needs no record: nothing to choose between
        return {"family": field_[0], "incumbent_family": incumbent,
                "chosen_on": config.champion_outcome, "field": field_,
                "reason": f"{field_[0]} is the only family in the field",
                "switch_margin": config.switch_margin, "min_record_rows": ch.MIN_RECORD_ROWS,
                "record_months": 0, "settled_rows": 0, "scores": {}, "refitted_months": 0,
                "reused_months": 0, "seconds": 0.0, "record": None}
    rec = build(ds, split, config, families=field_, months=config.record_months,
                previous=previous, origin=origin)
    table, y, preds = scores(ds, rec)
    rows = len(y)
    enough = rows >= ch.MIN_RECORD_ROWS
    values = {f: float(s["balanced_accuracy"]) for f, s in table.items()
              if enough and s["balanced_accuracy"] is not None}
    start = incumbent if incumbent in field_ else ch.FIRST_CHAMPION
    if start not in field_:
        start = field_[0]
    dates = list(np.asarray(rec.dates, dtype=object)[_settled(ds, rec)])
    outcomes = ro.table(ds, dates, preds, start) if rows else {}
    on_outcome = values and config.champion_outcome != "settled_state"
    if on_outcome:
        chosen, why = ro.choose(outcomes, values, start, config)
    else:
        chosen = ch.choose(values, start, config.switch_margin)
        why = ch.reason(values, start, chosen, config.switch_margin, rows)
    seconds = round(time.monotonic() - started, 2)
    log.info("Champion: %s (record %d settled rows over %d months, %d refitted, %d reused, "
             "%.1f s)", chosen, rows, len(rec.months), rec.refitted, rec.reused, seconds)
    return {"family": chosen, "incumbent_family": incumbent,
            "chosen_on": config.champion_outcome if on_outcome else "balanced_accuracy",
            "reason": why, "outcomes": outcomes,
            "record_check": ro.check(outcomes, values, chosen, start, config)
            if on_outcome else None,
            "switch_confidence": config.switch_confidence, "guard": config.champion_guard,
            "field": field_, "switch_margin": config.switch_margin,
            "min_record_rows": ch.MIN_RECORD_ROWS, "record_months": len(rec.months),
            "settled_rows": rows, "scores": table, "refitted_months": rec.refitted,
            "reused_months": rec.reused, "seconds": seconds, "record": rec.to_dict()}


def champion_brief(champion: dict[str, Any] | None) -> dict[str, Any] | None:
    """The policy's decision without the record's rows (results, logs, Ansible)."""
    if champion is None:
        return None
    return {k: v for k, v in champion.items() if k != "record"}
