"""Hyper-parameter search on a budget, inside the training rows only.

A seeded random search (``ParameterSampler``, ``tune_trials`` candidates, the
default parameters always among them) scored by balanced accuracy in a 3-fold
expanding time-series CV whose folds keep the embargo ``gap`` between training
and validation rows. The holdout never reaches this function, so it cannot
influence the choice; the walk-forward report compares tuned with fixed.

The space (docs/model.md): ``max_depth`` 6, 8, 10, 14 or none; ``max_features``
0.3, 0.5, 0.7 or sqrt; ``min_samples_leaf`` 1, 3, 5, 10 or 20. The number of
trees stays as configured: more trees never hurt a forest, they only cost time.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.model_selection import ParameterSampler, TimeSeriesSplit

from quantshift_ml.training import progress
from quantshift_ml.training.config import ModelParams, TrainConfig

SPACE: dict[str, list[Any]] = {
    "max_depth": [6, 8, 10, 14, None],
    "max_features": [0.3, 0.5, 0.7, "sqrt"],
    "min_samples_leaf": [1, 3, 5, 10, 20],
}
FOLDS = 3
SEED = 42


def _cv_score(x: np.ndarray, y: np.ndarray, params: ModelParams, gap: int) -> float:
    from quantshift_ml.training.baselines import balanced_accuracy
    from quantshift_ml.training.model import fit_forest

    scores = []
    for tr, te in TimeSeriesSplit(n_splits=FOLDS, gap=gap).split(x):
        if len(set(y[tr])) < 2:
            continue
        model = fit_forest(x[tr], y[tr], params)
        scores.append(balanced_accuracy(y[te], model.predict(x[te])))
    return float(np.mean(scores)) if scores else 0.0


def tune_forest(x: np.ndarray, y: np.ndarray, config: TrainConfig, *, gap: int
                ) -> tuple[ModelParams, dict[str, Any]]:
    """Best parameters of the search and a JSON-native report of every trial."""
    base = config.model
    keys = list(SPACE)
    candidates = [{k: getattr(base, k) for k in keys}]
    sampled = ParameterSampler(SPACE, n_iter=max(0, config.tune_trials - 1), random_state=SEED)
    candidates += [c for c in sampled if c not in candidates]
    scored: list[tuple[float, dict[str, Any]]] = []
    tried = candidates[: config.tune_trials]
    with progress.task("tuning", len(tried), "trials") as shown:
        for cand in tried:
            scored.append((round(_cv_score(x, y, replace(base, **cand), gap), 4), cand))
            shown.advance()
    score, params = max(scored, key=lambda t: t[0])  # first best: the default wins ties
    trials = [{"params": c, "cv_balanced_accuracy": v} for v, c in scored]
    best = {"params": params, "cv_balanced_accuracy": score}
    return replace(base, **params), {
        "method": f"seeded random search, {len(trials)} trials, {FOLDS}-fold time-series CV "
                  f"with a {gap}-bar gap, balanced accuracy", "best": best, "trials": trials}
