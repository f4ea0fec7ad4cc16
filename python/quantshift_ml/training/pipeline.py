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
from quantshift_ml.features import FEATURES, WARMUP_ROWS, compute_features, usable
from quantshift_ml.labels import Labeler, RulesLabeler, make_labeler
from quantshift_ml.training import evaluate as ev
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.model import fit_forest, make_bundle, predict, top_features

log = logging.getLogger(__name__)

MIN_TRAIN_ROWS = 60
MIN_HOLDOUT_ROWS = 20


@dataclass
class Dataset:
    """Features and labels for a whole history, computed once (causal, so reusable)."""

    bars: pd.DataFrame
    features: pd.DataFrame
    labels: pd.Series
    valid: np.ndarray  # usable features and a known label
    labeler: Labeler


def prepare_dataset(bars: pd.DataFrame, labeler: Labeler) -> Dataset:
    feats = compute_features(bars)
    labels = labeler.label(bars, feats)
    valid = (usable(feats) & labels.notna()).to_numpy()
    return Dataset(bars=bars, features=feats, labels=labels, valid=valid, labeler=labeler)


@dataclass
class Split:
    """Row positions (into the Dataset) of one train/holdout split."""

    train: np.ndarray
    holdout: np.ndarray
    stress: np.ndarray
    window_start: pd.Timestamp
    gap: int


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
    stress = np.empty(0, dtype=int)
    if config.stress_memory:
        lab = ds.labels.to_numpy()
        known_before = ds.valid & (pos < first_pos) & (pos + ds.labeler.horizon < train[0])
        is_stress = np.isin(lab.astype(str), list(config.stress_classes))
        stress = pos[known_before & is_stress]
    return Split(train=train, holdout=holdout, stress=stress, window_start=index[first_pos],
                 gap=gap)


def _xy(ds: Dataset, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = ds.features.iloc[positions][list(FEATURES)].to_numpy(dtype=float)
    y = ds.labels.to_numpy()[positions]
    return x, y


def walk_forward_cv(ds: Dataset, split: Split, config: TrainConfig) -> list[float]:
    """Expanding-window CV inside the training rows with the same embargo gap."""
    n = len(split.train)
    folds = min(config.cv_folds, max(0, (n - split.gap) // MIN_HOLDOUT_ROWS - 1))
    scores: list[float] = []
    if folds < 2:
        return scores
    for tr_idx, te_idx in TimeSeriesSplit(n_splits=folds, gap=split.gap).split(split.train):
        tr = np.concatenate([split.stress, split.train[tr_idx]])
        x, y = _xy(ds, tr)
        xt, yt = _xy(ds, split.train[te_idx])
        model = fit_forest(x, y, config.model)
        scores.append(round(ev.accuracy(yt, model.predict(xt)), 4))
    return scores


@dataclass
class TrainResult:
    """A trained candidate with every number the gate and the metadata need."""

    bundle: dict[str, Any]
    metrics: dict[str, Any]
    baselines: dict[str, Any]
    incumbent: dict[str, Any] | None
    data: dict[str, Any]
    config: dict[str, Any]
    labeler: dict[str, Any]
    seconds: float = 0.0
    holdout_features: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    holdout_labels: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))


def baselines_on(ds: Dataset, split: Split) -> dict[str, Any]:
    """Rule-applied-directly, persistence and majority baselines on the holdout."""
    _, y_hold = _xy(ds, split.holdout)
    _, y_train = _xy(ds, np.concatenate([split.stress, split.train]))
    rule = RulesLabeler().predict_from_features(ds.features.iloc[split.holdout])
    persist = ev.persistence_baseline(ds.labels.to_numpy(), split.holdout, ds.labeler.horizon)
    major = ev.majority_baseline(y_train, len(split.holdout))
    return {
        "rule": ev.classification_report(y_hold, rule),
        "persistence": ev.classification_report(y_hold, persist),
        "majority": ev.classification_report(y_hold, major),
    }


def score_incumbent(bundle: dict[str, Any] | None, ds: Dataset, split: Split
                    ) -> dict[str, Any] | None:
    """The active model's numbers on the candidate's holdout (None when there is none)."""
    if bundle is None:
        return None
    _, y_hold = _xy(ds, split.holdout)
    try:
        pred = predict(bundle, ds.features.iloc[split.holdout])
    except (ValueError, KeyError, AttributeError) as exc:
        return {"error": f"incumbent cannot score this data: {exc}"}
    return ev.classification_report(y_hold, pred)


def check_history(bars: pd.DataFrame, config: TrainConfig, *, as_of: str | None = None,
                  origin: str = "data") -> None:
    """Raise DataError when the bars cannot give a full window plus warm-up (cheap)."""
    bars = truncate(bars, as_of)
    ds = prepare_dataset(bars, make_labeler(config.labeler))
    labeled = np.nonzero(ds.valid)[0]
    if len(labeled) == 0:
        require_rows(bars, WARMUP_ROWS + 1, origin=origin, why="indicator warm-up")
    split_window(ds, config, int(labeled[-1]), origin=origin)


def train_candidate(
    bars: pd.DataFrame,
    config: TrainConfig,
    *,
    as_of: str | None = None,
    incumbent: dict[str, Any] | None = None,
    origin: str = "data",
    source: dict[str, Any] | None = None,
) -> TrainResult:
    """Train and evaluate a candidate on the window ending at ``as_of`` (default: last bar)."""
    started = time.monotonic()
    bars = truncate(bars, as_of)
    labeler = make_labeler(config.labeler)
    ds = prepare_dataset(bars, labeler)
    labeled_pos = np.nonzero(ds.valid)[0]
    if len(labeled_pos) == 0:
        require_rows(bars, WARMUP_ROWS + 1, origin=origin, why="indicator warm-up")
    split = split_window(ds, config, int(labeled_pos[-1]) if len(labeled_pos) else len(bars) - 1,
                         origin=origin)
    cv_scores = walk_forward_cv(ds, split, config)
    x, y = _xy(ds, np.concatenate([split.stress, split.train]))
    model = fit_forest(x, y, config.model)
    x_hold, y_hold = _xy(ds, split.holdout)
    pred = np.asarray(model.predict(x_hold), dtype=object)
    report = ev.classification_report(y_hold, pred)
    idx = ds.features.index
    metrics = {
        "test_accuracy": report["accuracy"],
        "cv_accuracy": round(float(np.mean(cv_scores)), 4) if cv_scores else None,
        "cv_scores": cv_scores,
        "balanced_accuracy": report["balanced_accuracy"],
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
        "top_features": top_features(model, list(FEATURES)),
        "holdout_rows": len(split.holdout),
        "train_rows": len(split.train),
        "stress_memory_rows": len(split.stress),
        "gap_rows": split.gap,
    }
    labeler_info = {"name": labeler.name, "horizon": labeler.horizon, "params": labeler.params()}
    bundle = make_bundle(model, list(FEATURES), labeler_info)
    data = {
        **(source or {}),
        "first_bar": str(idx[0].date()),
        "last_bar": str(bars.index[-1].date()),
        "window_start": str(split.window_start.date()),
        "train_start": str(idx[split.train[0]].date()),
        "train_end": str(idx[split.train[-1]].date()),
        "holdout_start": str(idx[split.holdout[0]].date()),
        "holdout_end": str(idx[split.holdout[-1]].date()),
        "rows": len(bars),
    }
    return TrainResult(
        bundle=bundle,
        metrics=metrics,
        baselines=baselines_on(ds, split),
        incumbent=score_incumbent(incumbent, ds, split),
        data=data,
        config=config.to_dict(),
        labeler=labeler_info,
        seconds=round(time.monotonic() - started, 3),
        holdout_features=ds.features.iloc[split.holdout][list(FEATURES)],
        holdout_labels=y_hold,
    )
