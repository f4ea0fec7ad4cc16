"""Fitting the configured estimator: tuned first when asked, then the forest or the ensemble.

Its own module so the recipe calls one step and the step calls down: ``tuning``
fits forests of ``model`` to choose parameters, ``model`` never calls back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.model import fit_forest, labels_of, make_ensemble


def fit_estimator(x: np.ndarray, y: np.ndarray, config: TrainConfig, *, gap: int = 0
                  ) -> tuple[Any, dict[str, Any] | None]:
    """The configured estimator, fitted; and the tuning report when ``config.tune``."""
    params, tuning = config.model, None
    if config.tune:
        from quantshift_ml.training.tuning import tune_forest

        params, tuning = tune_forest(x, labels_of(y), config, gap=gap)
    if config.estimator == "ensemble":
        model = make_ensemble(params, len(x))
        model.fit(x, labels_of(y))
        return model, tuning
    return fit_forest(x, y, params), tuning
