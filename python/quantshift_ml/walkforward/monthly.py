"""Monthly walk-forward: what the product would have done, month by month.

For every month M of the history (once warm-up plus a full window exist), the
model is trained exactly as ``train`` would on the last day before M (labels as
known then: the ``hmm`` labeler is refitted on bars up to that day only,
warm-started from the previous month; holdout, embargo, memory), its gate
decision is recorded, and it then predicts every day of M from causal features.
Truth for M's days is the final label (for ``hmm``: the state smoothed with the
whole history), never used for training. Every baseline is fitted on the same
training rows and scored on the same days.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml import defaults
from quantshift_ml.champion import policy as ch
from quantshift_ml.champion.families import available
from quantshift_ml.champion.outcome_policy import Market
from quantshift_ml.errors import DataError, UsageError
from quantshift_ml.model.labels import HmmLabeler, make_labeler
from quantshift_ml.training import evaluate as ev
from quantshift_ml.training import progress
from quantshift_ml.training import report as rp
from quantshift_ml.training.baselines import balanced_accuracy
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.fit import fit_estimator
from quantshift_ml.training.gate import REFERENCES, GateConfig, decide, strongest
from quantshift_ml.training.model import wrap
from quantshift_ml.training.pipeline import (
    Dataset,
    baseline_predictions,
    prepare_dataset,
    relabel,
    split_window,
)
from quantshift_ml.training.results import Scores, scores_dict
from quantshift_ml.walkforward import sections

SIGNALS = ("model", "champion")
"""Rows that are the product's own signals, never baselines."""
TOLERANCES = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2)
"""Baseline tolerances whose gate refusal rates the report gives."""


@dataclass
class _Pooled:
    """Walk-forward rows, appended month by month."""

    truth: list[np.ndarray] = field(default_factory=list)
    where: list[np.ndarray] = field(default_factory=list)
    preds: dict[str, list[np.ndarray]] = field(default_factory=dict)
    windows: list[dict[str, Any]] = field(default_factory=list)
    known_end: list[int] = field(default_factory=list)
    known: list[np.ndarray] = field(default_factory=list)

    def add(self, name: str, p: np.ndarray) -> None:
        self.preds.setdefault(name, []).append(np.asarray(p, dtype=object))


def _month_starts(idx: pd.DatetimeIndex) -> np.ndarray:
    months = pd.Series(idx.to_period("M"), index=np.arange(len(idx)))
    return months.groupby(months).head(1).index.to_numpy()


def _one_month(full: Dataset, ds: Dataset, config: TrainConfig, gate: GateConfig,
               end_known: int, month: np.ndarray, pooled: _Pooled, origin: str) -> None:
    """Train at the cut-off, gate on the holdout, predict the month; append everything."""
    split = split_window(ds, config, end_known, origin=origin)
    tr = np.concatenate([split.stress, split.train])
    cols = ds.inputs
    x = ds.features.iloc[tr][cols].to_numpy(dtype=float)
    y = ds.target.to_numpy()[tr]
    estimator, _ = fit_estimator(x, y, config, gap=split.gap)
    if hasattr(estimator, "n_jobs"):  # predicting ~100 rows: threads cost more than they save
        estimator.n_jobs = 1
    model = wrap(estimator, cols, ds.labeler.rule, ds.labels.to_numpy()[tr],
                 combine=config.combine)
    xh = ds.features.iloc[split.holdout][cols].to_numpy(dtype=float)
    y_hold = ds.labels.to_numpy()[split.holdout]
    hold = Scores.of(y_hold, model.predict(xh))
    hold_base = {k: Scores.of(y_hold, v) for k, v in
                 baseline_predictions(ds, tr, split.holdout).items()}
    decision = decide(hold, None, gate, hold_base)
    xm = ds.features.iloc[month][cols].to_numpy(dtype=float)
    pm = np.asarray(model.predict(xm), dtype=object)
    pooled.truth.append(full.labels.to_numpy()[month])
    pooled.where.append(month)
    pooled.known_end.append(end_known)  # the champion's record: labels as known then
    pooled.known.append(ch.encode(ds.labels.to_numpy()[:end_known + 1]))
    pooled.add("model", pm)
    known = hindsight = None  # labels that never change (rules, forward): their own
    if isinstance(ds.labeler, HmmLabeler) and ds.fitted is not None:
        known = ds.labeler.known_target(ds.bars, ds.features, ds.fitted).to_numpy()
        hindsight = full.target.to_numpy()
    for name, p in baseline_predictions(ds, tr, month, persist_from=known,
                                        hindsight=hindsight).items():
        pooled.add(name, p)
    best_name, best = strongest(hold_base, gate.metric, gate.labeler)
    pooled.windows.append({
        "month": str(ds.features.index[month[0]].to_period("M")),
        "gate_value": hold.metric(gate.metric), "gate_passed": decision["passed"],
        "holdout_strongest": best_name, "holdout_strongest_value": round(best, 4),
        "month_accuracy": round(ev.accuracy(full.labels.to_numpy()[month], pm), 4)})


def _months(full: Dataset, start: str | None) -> list[tuple[int, np.ndarray]]:
    """(first row, usable rows) of every month the walk-forward reports, in order.

    A month counts once warm-up has left a known label before it (and it is not
    before ``start``); listed up front so the progress line knows the total.
    """
    idx = pd.DatetimeIndex(full.features.index)
    starts = _month_starts(idx)
    out = []
    for k, first in enumerate(starts):
        end_known = first - 1 - full.labeler.horizon  # newest row whose label is known
        if (start is not None and idx[first] < pd.Timestamp(start)) or end_known < 0:
            continue
        last = starts[k + 1] if k + 1 < len(starts) else len(idx)
        month = np.arange(first, last)
        month = month[full.valid[month]]
        if len(month) and first - 1 > 0:
            out.append((first, month))
    return out


def _month_job(full: Dataset, ds: Dataset, config: TrainConfig, gate: GateConfig,
               end_known: int, month: np.ndarray, origin: str) -> _Pooled | None:
    """One month in a worker process: its own ``_Pooled`` (None: not enough history)."""
    pooled = _Pooled()
    with warnings.catch_warnings():  # as in run_walkforward, in this process too
        warnings.filterwarnings("ignore", message=r".*sklearn\.utils\.parallel\.delayed",
                                category=UserWarning)
        try:
            _one_month(full, ds, config, gate, end_known, month, pooled, origin)
        except DataError:
            return None
    return pooled


def _merge(into: _Pooled, part: _Pooled) -> None:
    into.truth.extend(part.truth)
    into.where.extend(part.where)
    into.windows.extend(part.windows)
    into.known_end.extend(part.known_end)
    into.known.extend(part.known)
    for name, arrays in part.preds.items():
        into.preds.setdefault(name, []).extend(arrays)


def _collect(bars: pd.DataFrame, config: TrainConfig, gate: GateConfig, start: str | None,
             origin: str, jobs: int = 1) -> tuple[Dataset, _Pooled]:
    labeler = make_labeler(config.labeler)
    full = prepare_dataset(bars, labeler)
    months = _months(full, start)
    pooled = _Pooled()
    warm = None
    with progress.task("walk-forward", len(months), "months") as shown:
        if jobs > 1:
            _collect_parallel(full, config, gate, months, origin, jobs, pooled, shown)
        else:
            for first, month in months:
                end_known = first - 1 - labeler.horizon
                try:
                    ds = full if full.fitted is None else relabel(full, first - 1, warm=warm)
                    warm = ds.fitted
                    _one_month(full, ds, config, gate, end_known, month, pooled, origin)
                except DataError:
                    pass  # not enough history yet
                shown.advance()
    if not pooled.windows:
        raise DataError(f"{origin}: history too short for a walk-forward "
                        f"({config.years:g}-year window plus warm-up)")
    return full, pooled


def _collect_parallel(full: Dataset, config: TrainConfig, gate: GateConfig,
                      months: list[tuple[int, np.ndarray]], origin: str, jobs: int,
                      pooled: _Pooled, shown: Any) -> None:
    """``_collect``'s months on ``jobs`` loky processes, merged in month order.

    The HMM relabelling stays here, in order: each month's fit is warm-started from
    the previous month's, so it is a chain (and cheap beside the forest). Each
    month's refit, gate and predictions then run in a worker on that month's
    relabelled Dataset; the forest grows its trees on one core there (a forest
    with a fixed seed grows the same trees whatever its ``n_jobs``), so the report
    is the one ``jobs=1`` gives, apart from ``seconds``.
    """
    from joblib import Parallel, delayed

    one_core = replace(config, model=replace(config.model, n_jobs=1))
    skipped = [0]

    def tasks() -> Any:
        """Pulled by joblib as workers free up: the next relabelling overlaps the refits."""
        warm = None
        for first, month in months:
            try:
                ds = full if full.fitted is None else relabel(full, first - 1, warm=warm)
            except DataError:
                skipped[0] += 1  # not enough history yet, as in the serial loop
                continue
            warm = ds.fitted
            yield delayed(_month_job)(full, ds, one_core, gate,
                                      first - 1 - full.labeler.horizon, month, origin)

    for part in Parallel(n_jobs=jobs, backend="loky", return_as="generator")(tasks()):
        if part is not None:
            _merge(pooled, part)
        shown.advance()
    for _ in range(skipped[0]):
        shown.advance()


def _refusals(windows: list[dict[str, Any]]) -> dict[str, float]:
    """Share of months whose gate would refuse, for each baseline tolerance."""
    out = {}
    for tol in TOLERANCES:
        refused = [w["gate_value"] + tol <= w["holdout_strongest_value"] for w in windows]
        out[f"{tol:g}"] = round(float(np.mean(refused)), 4)
    return out


@dataclass(frozen=True)
class ChampionPolicy:
    """The champion row's policy: the field, the record's length (None: expanding)
    and the switching margin (training.champion)."""

    families: tuple[str, ...] | None = None
    record_months: int | None = ch.RECORD_MONTHS
    margin: float = ch.SWITCH_MARGIN
    outcome: str = defaults.CHAMPION_OUTCOME
    """Chosen on (issue 31); ``settled_state`` is issue 25's balanced-accuracy rule."""
    confidence: float = defaults.SWITCH_CONFIDENCE
    guard: float = defaults.CHAMPION_GUARD


def _champion(full: Dataset, pooled: _Pooled, pos: np.ndarray, preds: dict[str, np.ndarray],
              policy: ChampionPolicy) -> tuple[np.ndarray, dict[str, Any]]:
    """The champion row and its policy report (``champion.evaluate``, no refitting)."""
    field_ = [f for f in available(full, list(policy.families) if policy.families else None)
              if ch.WALKFORWARD_ROWS[f] in preds]
    if not field_:
        raise UsageError(f"--families {','.join(policy.families or ())}: none of them can "
                         f"run with the {full.labeler.name!r} labeler (the filters need "
                         "'hmm'); add forest")
    rows = ch.Months(pos=pos, month=np.concatenate(
        [np.full(len(w), k) for k, w in enumerate(pooled.where)]),
        known_end=pooled.known_end, known=pooled.known)
    fam = {f: preds[ch.WALKFORWARD_ROWS[f]] for f in field_}
    if policy.outcome == "settled_state":
        row, chosen = ch.evaluate(rows, fam, record_months=policy.record_months,
                                  margin=policy.margin)
    else:
        row, chosen = ch.evaluate_on(rows, fam, Market.of(full.bars["Close"]),
                                     outcome=policy.outcome,
                                     record_months=policy.record_months,
                                     confidence=policy.confidence, guard=policy.guard,
                                     horizon=full.labeler.horizon)
    return row, {"families": field_, "record_months": policy.record_months or "expanding",
                 "chosen_on": policy.outcome, "switch_confidence": policy.confidence,
                 "guard": policy.guard,
                 "switch_margin": policy.margin, "min_record_rows": ch.MIN_RECORD_ROWS,
                 **ch.summary(chosen, field_),
                 "chosen": [{"month": w["month"], "family": c}
                            for w, c in zip(pooled.windows, chosen, strict=True)]}


def run_walkforward(bars: pd.DataFrame, config: TrainConfig, gate: GateConfig,
                    *, start: str | None = None, origin: str = "data",
                    policy: ChampionPolicy | None = None, jobs: int = 1) -> dict[str, Any]:
    """Run the monthly walk-forward and return a JSON-native report; ``jobs`` > 1 runs
    the monthly refits on that many local processes (same report but ``seconds``)."""
    return walkforward_rows(bars, config, gate, start=start, origin=origin, policy=policy,
                            jobs=jobs)[0]


def walkforward_rows(bars: pd.DataFrame, config: TrainConfig, gate: GateConfig,
                     *, start: str | None = None, origin: str = "data",
                     policy: ChampionPolicy | None = None, jobs: int = 1
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``run_walkforward``'s report and its rows: truth, the model's and the strongest
    baseline's regimes and month ids (what a pooled margin over markets resamples)."""
    started = time.monotonic()
    # a report, not a training: every core grows trees (the forest is the same)
    config = replace(config, model=replace(config.model, n_jobs=-1))
    # scikit-learn's forest threads now and then warn that its own ``delayed`` ran
    # outside its ``Parallel`` (scikit-learn#32631, intermittent under load): 200
    # refits turned it into megabytes of stderr; the results are unaffected
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*sklearn\.utils\.parallel\.delayed",
                                category=UserWarning)
        full, pooled = _collect(bars, config, gate, start, origin, jobs)
    y = np.concatenate(pooled.truth)
    pos = np.concatenate(pooled.where)
    preds = {k: np.concatenate(v) for k, v in pooled.preds.items()}
    preds["champion"], policy_report = _champion(full, pooled, pos, preds,
                                                 policy or ChampionPolicy())
    dates = pd.DatetimeIndex(full.features.index[pos])
    months = np.asarray(dates.year * 12 + dates.month)
    base_scores = {k: Scores.of(y, v) for k, v in preds.items() if k not in SIGNALS}
    best_name, best_value = strongest(base_scores, "balanced_accuracy", full.labeler.name)
    report: dict[str, Any] = {
        **_header(full, config, gate, pooled),
        "model": ev.classification_report(y, preds["model"]),
        "baselines": scores_dict(base_scores),
        "references": [k for k in REFERENCES if k in base_scores],
        "strongest_baseline": {"name": best_name, "balanced_accuracy": round(best_value, 4),
                               **rp.margin_interval(y, preds["model"], preds[best_name],
                                                    months)},
        "halves": sections.halves(y, preds, dates, months, best_name),
        "gate_pass_rate": round(float(np.mean([w["gate_passed"] for w in pooled.windows])), 4),
        "gate_refusal_rate_by_tolerance": _refusals(pooled.windows),
        "per_year": {str(yv): rp.per_period(y, preds, dates.year == yv)
                     for yv in sorted(set(dates.year))},
        "stress_periods": sections.stress(y, preds, dates),
        "economics": sections.economics(full, pos, preds),
        "outcomes": rp.outcomes_table(full.bars["Close"].to_numpy(dtype=float),
                                      pd.DatetimeIndex(full.bars.index), pos, preds, y,
                                      best_name),
        "champion": sections.champion_report(y, preds, best_name, months, policy_report),
        "windows": pooled.windows,
    }
    if full.labeler.rule is not None:
        states = full.labeler.rule.states
        t = states(y)
        report["learned_axis"] = {k: round(balanced_accuracy(t, states(v)), 4)
                                  for k, v in preds.items()}
    report["seconds"] = round(time.monotonic() - started, 2)
    return report, {"truth": y, "model": preds["model"], "strongest": preds[best_name],
                    "month": months}


def _header(full: Dataset, config: TrainConfig, gate: GateConfig, pooled: _Pooled
            ) -> dict[str, Any]:
    """What was run: the labeler, the configuration, the gate and the months."""
    return {"labeler": {"name": full.labeler.name, "horizon": full.labeler.horizon,
                        "params": full.labeler.params()},
            "config": config.to_dict(),
            "gap_rows": config.effective_gap(full.labeler.horizon),
            "gate": {"metric": gate.metric, "floor": gate.floor,
                     "beat_baseline": gate.beat_baseline,
                     "baseline_tolerance": gate.baseline_tolerance},
            "months": len(pooled.windows),
            "first_month": pooled.windows[0]["month"],
            "last_month": pooled.windows[-1]["month"]}
