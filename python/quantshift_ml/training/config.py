"""Training configuration with the documented defaults (see docs/model.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelParams:
    """Random Forest hyper-parameters: the seed runbook's (100 trees, depth 10,
    seed 42) but for ``max_features``.

    ``max_features=0.5`` (half the features tried at each split) instead of
    scikit-learn's ``"sqrt"`` (3 of 13): the regimes hinge on single features
    (``atr_ratio`` for Crisis and High Vol), and with 3 candidates per split most
    splits cannot use them and fall back on correlated volatility features whose
    levels differ from one crisis to the next. Chosen on the 2002-2010 months of
    the walk-forward, confirmed on 2011-2018 (docs/model.md, "max_features").
    """

    n_estimators: int = 100
    max_depth: int | None = 10
    max_features: float | str | None = 0.5
    min_samples_leaf: int = 1
    class_weight: str | None = None
    random_state: int = 42
    n_jobs: int = 1


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run, recorded in the model metadata.

    ``gap`` is the embargo in bars between the last training row and the first
    evaluation row; it is at least the labeler's horizon so no training label
    peeks into the evaluation period. ``stress_memory`` keeps earlier Crisis and
    High Vol rows from before the window in the training set (see docs/model.md).
    """

    years: float = 2.0
    labeler: str = "rules"
    holdout_fraction: float = 0.2
    gap: int = 21
    cv_folds: int = 5
    stress_memory: bool = True
    stress_classes: tuple[str, ...] = ("Crisis", "High Vol")
    model: ModelParams = field(default_factory=ModelParams)

    def effective_gap(self, horizon: int) -> int:
        """The embargo actually used: never shorter than the label horizon."""
        return max(self.gap, horizon)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stress_classes"] = list(self.stress_classes)
        return d
