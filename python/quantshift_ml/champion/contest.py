"""A training as a contest: the champion family on the record becomes the candidate.

The recipe (issue 25): build and score the out-of-time record of every family
(``record.decide``), keep the incumbent family unless a challenger leads it by
more than the margin, then train the chosen family on the window's training rows
and score it on the holdout beside every baseline and the incumbent, as the
forest always was. The gate then judges that candidate (``operations``); a
filter champion is packaged as its signed spec, the forest as before.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml.champion import record
from quantshift_ml.champion.families import FittedFilter, family
from quantshift_ml.champion.shadows import fit_shadows
from quantshift_ml.model import filterspec
from quantshift_ml.training import baselines as bl
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.model import family_of, make_filter_bundle
from quantshift_ml.training.pipeline import (
    Dataset,
    Prepared,
    Split,
    TrainResult,
    _data_window,
    baselines_on,
    check_history,
    labeler_info,
    score_incumbent,
    train_candidate,
)
from quantshift_ml.training.results import CandidateMetrics, Scores


def train_champion(bars: pd.DataFrame, config: TrainConfig, *, as_of: str | None = None,
                   incumbent: dict[str, Any] | None = None,
                   incumbent_meta: dict[str, Any] | None = None, origin: str = "data",
                   source: dict[str, Any] | None = None, prepared: Prepared | None = None
                   ) -> TrainResult:
    """The record's champion, trained and scored on this window (module docstring)."""
    started = time.monotonic()
    prep = prepared or check_history(bars, config, as_of=as_of, origin=origin)
    meta = incumbent_meta or {}
    decision = record.decide(prep.ds, prep.split, config, incumbent=family_of(meta)
                             if meta else "forest",
                             previous=(meta.get("champion") or {}).get("record"), origin=origin)
    if decision["family"] == "forest":
        result = train_candidate(bars, config, incumbent=incumbent, origin=origin,
                                 source=source, prepared=prep)
    else:
        result = _filter_candidate(prep.ds, prep.split, config, decision["family"],
                                   incumbent=incumbent, source=source)
    shadows = fit_shadows(prep.ds, prep.split, config, decision["family"])
    return replace(result, family=decision["family"], champion=decision, shadows=shadows,
                   seconds=round(time.monotonic() - started, 3))


def _filter_candidate(ds: Dataset, split: Split, config: TrainConfig, name: str, *,
                      incumbent: dict[str, Any] | None, source: dict[str, Any] | None
                      ) -> TrainResult:
    """A filter family fitted on the training rows and scored like the forest would be."""
    rows = np.concatenate([split.stress, split.train])
    fitted = family(name).fit(ds, rows, config, gap=split.gap)
    assert isinstance(fitted, FittedFilter)
    info = labeler_info(ds)
    bundle = make_filter_bundle(fitted.spec(), info)
    hold = fitted.predict(ds, split.holdout)
    y_hold = ds.labels.to_numpy()[split.holdout]
    frame = filterspec.with_column(fitted.filter, ds.bars, ds.features)
    return TrainResult(
        bundle=bundle,
        candidate=CandidateMetrics(
            holdout=Scores.of(y_hold, hold.regimes), cv_scores=[], top_features=[],
            train_rows=len(split.train), stress_memory_rows=len(split.stress),
            memory=split.memory, gap_rows=split.gap,
            learned_axis=_learned_axis(ds, split, hold.regimes)),
        baseline_scores=baselines_on(ds, split),
        incumbent_scores=score_incumbent(incumbent, ds, split),
        data=_data_window(ds, split, source), config=config.to_dict(), labeler=info,
        holdout_features=frame.iloc[split.holdout][list(filterspec.INPUTS)],
        holdout_labels=y_hold)


def _learned_axis(ds: Dataset, split: Split, regimes: np.ndarray) -> dict[str, Any] | None:
    """The calm/turbulent axis alone, as the forest's metrics report it."""
    if ds.labeler.rule is None:
        return None
    t_hold = ds.target.to_numpy()[split.holdout]
    states = ds.labeler.rule.states(regimes)
    return {"target": "calm/turbulent",
            "accuracy": round(float(np.mean(np.asarray(t_hold, dtype=str)
                                            == np.asarray(states, dtype=str))), 4),
            "balanced_accuracy": round(bl.balanced_accuracy(t_hold, states), 4)}
