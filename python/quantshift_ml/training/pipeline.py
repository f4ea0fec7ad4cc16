"""One training run: window, time-ordered holdout with embargo, walk-forward CV, baselines.

Layout of the labeled rows of the window, oldest first::

    [stress memory: earlier Crisis/High Vol rows] ... | train .......... | gap | holdout |
                                                    window start        embargo   last labeled bar

The holdout is the newest ``holdout_fraction`` of the window's labeled rows; the
``gap`` bars before it are dropped so that no training label (which for the
``forward`` labeler looks H bars ahead) and no overlapping feature window spans
the boundary. Walk-forward CV uses the same gap inside the training part. The
model that is evaluated is the model that is deployed: its reported holdout
numbers describe exactly the artifact whose sha256 is recorded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import TimeSeriesSplit

from quantshift_ml.data.validation import require_rows
from quantshift_ml.data.window import select_window, truncate
from quantshift_ml.errors import DataError
from quantshift_ml.model.features import (
    FEATURES,
    HMM_FILTER,
    WARMUP_ROWS,
    compute_features,
    usable,
    with_hmm_filter,
)
from quantshift_ml.model.labels import Labeler, make_labeler
from quantshift_ml.training import baselines as bl
from quantshift_ml.training import evaluate as ev
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.fit import fit_estimator
from quantshift_ml.training.model import (
    fit_forest,
    inputs_frame,
    make_bundle,
    predict,
    top_features,
    wrap,
)
from quantshift_ml.training.results import CandidateMetrics, Scores, Unscored, scores_dict

log = logging.getLogger(__name__)

MIN_TRAIN_ROWS = 60
MIN_HOLDOUT_ROWS = 20


@dataclass
class Dataset:
    """Features, regimes and the estimator's target for a whole history.

    ``labels`` are the five regimes (the truth the model is scored on);
    ``target`` is what the estimator learns (the same for ``rules``/``forward``,
    calm/turbulent for ``hmm``); ``fitted`` is what the labeler fitted (the HMM's
    parameters) on exactly these bars. Features are causal, so a Dataset's
    features are reusable for any cut-off; its labels are not (``relabel``).
    """

    bars: pd.DataFrame
    features: pd.DataFrame
    labels: pd.Series
    target: pd.Series
    valid: np.ndarray  # usable features and a known label
    labeler: Labeler
    fitted: Any = None

    @property
    def inputs(self) -> list[str]:
        """The model's input columns: ``FEATURES`` (+ ``hmm_filter`` for ``hmm``)."""
        return list(FEATURES) + ([HMM_FILTER] if HMM_FILTER in self.features.columns else [])


def prepare_dataset(bars: pd.DataFrame, labeler: Labeler, *, fitted: Any = None,
                    features: pd.DataFrame | None = None) -> Dataset:
    """Features once, then the labeler (fitted on these bars unless ``fitted`` is given).

    ``features`` given with an ``hmm_filter`` column must have it computed with
    ``fitted`` (``relabel`` does): it is then not computed a second time.
    """
    feats = compute_features(bars) if features is None else features
    if fitted is None:
        fitted = labeler.fit(bars)
    if HMM_FILTER not in feats.columns:
        feats = with_hmm_filter(feats, bars, fitted)
    target = labeler.target(bars, feats, fitted)
    labels = labeler.label(bars, feats, fitted)
    valid = (usable(feats) & labels.notna() & target.notna()).to_numpy()
    return Dataset(bars=bars, features=feats, labels=labels, target=target, valid=valid,
                   labeler=labeler, fitted=fitted)


def relabel(ds: Dataset, cutoff: int, *, warm: Any = None) -> Dataset:
    """The Dataset as a training run at row ``cutoff`` would see it.

    Labels of rows after ``cutoff`` are unknown then (NaN). For a labeler that
    fits (``hmm``), it is refitted on bars up to ``cutoff`` only, warm-started from
    ``warm``; features are shared, being causal.
    """
    bars = ds.bars.iloc[: cutoff + 1]
    fitted = ds.labeler.fit(bars, warm=warm) if ds.fitted is not None else None
    # the filter input over every bar with this cut-off's HMM: what the model
    # trained now would be fed later (causal, so its first rows are as in ``part``)
    features = with_hmm_filter(ds.features, ds.bars, fitted)
    part = prepare_dataset(bars, ds.labeler, fitted=fitted,
                           features=features.iloc[: cutoff + 1])
    n = len(ds.features)
    pad = pd.Series(np.full(n - len(bars), np.nan, dtype=object), index=ds.features.index[
        cutoff + 1:])
    return Dataset(bars=ds.bars, features=features,
                   labels=pd.concat([part.labels.astype(object), pad]),
                   target=pd.concat([part.target.astype(object), pad]),
                   valid=np.concatenate([part.valid, np.zeros(n - len(bars), dtype=bool)]),
                   labeler=ds.labeler, fitted=fitted)


@dataclass
class Split:
    """Row positions (into the Dataset) of one train/holdout split.

    ``stress`` holds the memory rows from before the window (``TrainConfig.memory``).
    """

    train: np.ndarray
    holdout: np.ndarray
    stress: np.ndarray
    window_start: pd.Timestamp
    gap: int
    memory: str = "stress"


def split_window(ds: Dataset, config: TrainConfig, end_pos: int, *, origin: str) -> Split:
    """Positions for the window ending at row ``end_pos`` (inclusive).

    Raises DataError when the history is too short for warm-up plus window.
    """
    index = ds.features.index
    window_start = select_window(ds.bars.iloc[: end_pos + 1], years=config.years)
    first_pos = int(index.searchsorted(window_start))
    if first_pos < WARMUP_ROWS:
        need = WARMUP_ROWS + (end_pos + 1 - first_pos)
        require_rows(ds.bars.iloc[: first_pos], need + first_pos, origin=origin,
                     why=f"{config.years:g}-year window plus {WARMUP_ROWS} bars of indicator "
                     "warm-up")
    pos = np.arange(len(index))
    in_window = ds.valid & (pos >= first_pos) & (pos <= end_pos)
    labeled = pos[in_window]
    gap = config.effective_gap(ds.labeler.horizon)
    n_hold = max(MIN_HOLDOUT_ROWS, round(len(labeled) * config.holdout_fraction))
    if len(labeled) < n_hold + gap + MIN_TRAIN_ROWS:
        raise DataError(
            f"{origin}: only {len(labeled)} labeled rows in the {config.years:g}-year window "
            f"ending {index[end_pos].date()}; need at least {n_hold + gap + MIN_TRAIN_ROWS} "
            f"(train {MIN_TRAIN_ROWS} + embargo {gap} + holdout {n_hold})"
        )
    holdout = labeled[-n_hold:]
    train = labeled[labeled < holdout[0] - gap]
    memory = config.memory_for(ds.labeler.name)
    known_before = ds.valid & (pos < first_pos) & (pos + ds.labeler.horizon < train[0])
    if memory == "stress":
        target = ds.target.to_numpy().astype(str)
        known_before &= np.isin(target, list(config.stress_classes))
    stress = pos[known_before] if memory != "window" else np.empty(0, dtype=int)
    return Split(train=train, holdout=holdout, stress=stress, window_start=index[first_pos],
                 gap=gap, memory=memory)


def _x(ds: Dataset, positions: np.ndarray) -> np.ndarray:
    return ds.features.iloc[positions][ds.inputs].to_numpy(dtype=float)


def _xy(ds: Dataset, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features and the estimator's target at ``positions``."""
    return _x(ds, positions), ds.target.to_numpy()[positions]


def walk_forward_cv(ds: Dataset, split: Split, config: TrainConfig) -> list[float]:
    """Expanding-window CV inside the training rows with the same embargo gap.

    Scored by accuracy on the five regimes (the training log's "CV Accuracy").
    """
    n = len(split.train)
    folds = min(config.cv_folds, max(0, (n - split.gap) // MIN_HOLDOUT_ROWS - 1))
    scores: list[float] = []
    if folds < 2:
        return scores
    labels = ds.labels.to_numpy()
    for tr_idx, te_idx in TimeSeriesSplit(n_splits=folds, gap=split.gap).split(split.train):
        rows = np.concatenate([split.stress, split.train[tr_idx]])
        x, y = _xy(ds, rows)
        if len(set(map(str, y))) < 2:
            continue
        model = wrap(fit_forest(x, y, config.model), ds.inputs, ds.labeler.rule,
                     labels[rows], combine=config.combine)
        te = split.train[te_idx]
        scores.append(round(ev.accuracy(labels[te], model.predict(_x(ds, te))), 4))
    return scores


@dataclass
class TrainResult:
    """A trained candidate with every number the gate and the metadata need.

    The scores are typed (``candidate``, ``baseline_scores``, ``incumbent_scores``:
    what the gate reads); ``metrics``, ``baselines`` and ``incumbent`` are the same
    numbers as the JSON the metadata and the CLI report.
    """

    bundle: dict[str, Any]
    candidate: CandidateMetrics
    baseline_scores: dict[str, Scores]
    incumbent_scores: Scores | Unscored | None
    data: dict[str, Any]
    config: dict[str, Any]
    labeler: dict[str, Any]
    seconds: float = 0.0
    holdout_features: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    holdout_labels: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))
    family: str = "forest"
    champion: dict[str, Any] | None = None
    """The record and the policy's decision (``training.record.decide``)."""
    shadows: dict[str, dict[str, Any]] = field(default_factory=dict)
    """family -> spec of the other filter families, fitted on the same rows
    (``champion.shadows``): logged live beside the champion's answers."""

    @property
    def metrics(self) -> dict[str, Any]:
        return self.candidate.to_dict()

    @property
    def baselines(self) -> dict[str, Any]:
        return scores_dict(self.baseline_scores)

    @property
    def incumbent(self) -> dict[str, Any] | None:
        return None if self.incumbent_scores is None else self.incumbent_scores.to_dict()


def baseline_predictions(ds: Dataset, train: np.ndarray, rows: np.ndarray,
                         persist_from: np.ndarray | None = None,
                         hindsight: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every fair baseline's regimes for ``rows`` (see ``training.baselines``)."""
    inputs = bl.BaselineInputs(bars=ds.bars, features=ds.features,
                               target=ds.target.to_numpy(), train=train, rows=rows,
                               labeler=ds.labeler, fitted=ds.fitted, persist_from=persist_from,
                               labels=ds.labels.to_numpy(), hindsight=hindsight)
    return bl.finish(inputs, bl.predict_all(inputs))


def baselines_on(ds: Dataset, split: Split) -> dict[str, Scores]:
    """Every baseline's scores on the holdout, trained on the model's training rows."""
    y_hold = ds.labels.to_numpy()[split.holdout]
    train = np.concatenate([split.stress, split.train])
    preds = baseline_predictions(ds, train, split.holdout)
    return {k: Scores.of(y_hold, v) for k, v in preds.items()}


def score_incumbent(bundle: dict[str, Any] | None, ds: Dataset, split: Split
                    ) -> Scores | Unscored | None:
    """The active model's numbers on the candidate's holdout (None when there is none).

    A model of another labeler predicts other regimes: its numbers against these
    labels would mean nothing, so it is reported as not comparable.
    """
    if bundle is None:
        return None
    theirs = (bundle.get("labeler") or {}).get("name", "rules")
    if theirs != ds.labeler.name:
        return Unscored(f"incumbent uses the {theirs!r} labeler, the candidate "
                        f"{ds.labeler.name!r}: not comparable, no regression check")
    y_hold = ds.labels.to_numpy()[split.holdout]
    # fed as in production: the filter input from the model's *own* HMM fit, not
    # from the one this training just made (the service does the same)
    try:
        feats = inputs_frame(bundle, ds.bars, ds.features)
        pred = predict(bundle, feats.iloc[split.holdout])
    except (ValueError, KeyError, AttributeError, IndexError) as exc:
        return Unscored(f"incumbent cannot score this data: {exc}")
    return Scores.of(y_hold, pred)


@dataclass
class Prepared:
    """A Dataset and its split, computed once and shared by the history check and training."""

    ds: Dataset
    split: Split


def check_history(bars: pd.DataFrame, config: TrainConfig, *, as_of: str | None = None,
                  origin: str = "data") -> Prepared:
    """Features, labels and split; DataError when the bars cannot give a full window.

    Called before anything is written, so bad or short data leaves the store as it
    was; its result is handed to ``train_candidate`` so nothing is computed twice.
    """
    bars = truncate(bars, as_of)
    if len(bars) <= WARMUP_ROWS:
        require_rows(bars, WARMUP_ROWS + 1, origin=origin, why="indicator warm-up")
    ds = prepare_dataset(bars, make_labeler(config.labeler))
    labeled = np.nonzero(ds.valid)[0]
    if len(labeled) == 0:
        require_rows(bars, WARMUP_ROWS + 1, origin=origin, why="indicator warm-up")
    return Prepared(ds, split_window(ds, config, int(labeled[-1]), origin=origin))


def _metrics(ds: Dataset, split: Split, model: Any, cv_scores: list[float],
             tuning: dict[str, Any] | None) -> CandidateMetrics:
    """The candidate's holdout scores on the five regimes (and the learned axis)."""
    y_hold = ds.labels.to_numpy()[split.holdout]
    x_hold, t_hold = _xy(ds, split.holdout)
    learned_axis = None
    if ds.labeler.rule is not None:  # the learned axis alone: calm / turbulent
        states = ds.labeler.rule.states(model.predict(x_hold))
        learned_axis = {
            "target": "calm/turbulent", "accuracy": round(ev.accuracy(t_hold, states), 4),
            "balanced_accuracy": round(bl.balanced_accuracy(t_hold, states), 4),
            "priors": model.priors, "counterpart": model.counterpart}
    return CandidateMetrics(
        holdout=Scores.of(y_hold, model.predict(x_hold)), cv_scores=cv_scores,
        top_features=top_features(model, ds.inputs), train_rows=len(split.train),
        stress_memory_rows=len(split.stress), memory=split.memory, gap_rows=split.gap,
        learned_axis=learned_axis, tuning=tuning)


def _data_window(ds: Dataset, split: Split, source: dict[str, Any] | None) -> dict[str, Any]:
    idx = ds.features.index
    return {
        **(source or {}),
        "first_bar": str(idx[0].date()),
        "last_bar": str(ds.bars.index[-1].date()),
        "window_start": str(split.window_start.date()),
        "train_start": str(idx[np.concatenate([split.stress, split.train]).min()].date()),
        "train_end": str(idx[split.train[-1]].date()),
        "holdout_start": str(idx[split.holdout[0]].date()),
        "holdout_end": str(idx[split.holdout[-1]].date()),
        "rows": len(ds.bars),
    }


def labeler_info(ds: Dataset) -> dict[str, Any]:
    """What the metadata records of the labeler, including what it fitted."""
    info: dict[str, Any] = {"name": ds.labeler.name, "horizon": ds.labeler.horizon,
                            "params": ds.labeler.params()}
    if ds.fitted is not None:
        info["fitted"] = ds.fitted.to_dict()
    return info


def train_candidate(
    bars: pd.DataFrame,
    config: TrainConfig,
    *,
    as_of: str | None = None,
    incumbent: dict[str, Any] | None = None,
    origin: str = "data",
    source: dict[str, Any] | None = None,
    prepared: Prepared | None = None,
) -> TrainResult:
    """Train and evaluate a candidate on the window ending at ``as_of`` (default: last bar)."""
    started = time.monotonic()
    prep = prepared or check_history(bars, config, as_of=as_of, origin=origin)
    ds, split = prep.ds, prep.split
    cv_scores = walk_forward_cv(ds, split, config)
    rows = np.concatenate([split.stress, split.train])
    x, y = _xy(ds, rows)
    estimator, tuning = fit_estimator(x, y, config, gap=split.gap)
    model = wrap(estimator, ds.inputs, ds.labeler.rule, ds.labels.to_numpy()[rows],
                 combine=config.combine)
    info = labeler_info(ds)
    return TrainResult(
        bundle=make_bundle(model, ds.inputs, info),
        candidate=_metrics(ds, split, model, cv_scores, tuning),
        baseline_scores=baselines_on(ds, split),
        incumbent_scores=score_incumbent(incumbent, ds, split),
        data=_data_window(ds, split, source),
        config=config.to_dict(),
        labeler=info,
        seconds=round(time.monotonic() - started, 3),
        holdout_features=ds.features.iloc[split.holdout][ds.inputs],
        holdout_labels=ds.labels.to_numpy()[split.holdout],
    )
