"""Typed results of a training or an evaluation: one shape for every score.

Why: the candidate's holdout numbers, the incumbent's and each baseline's used to
travel as dicts with different key names (the candidate's ``test_accuracy``, the
others' ``accuracy``), translated by a table in the gate. Now all of them are
``Scores`` with the same attributes and the gate reads one of them
(``Scores.metric``). The dicts that leave the package (the CLI's JSON, the signed
metadata, the Ansible modules' results) are made at the edge by ``to_dict``, with
exactly the keys they always had.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from quantshift_ml.training import evaluate as ev


@dataclass(frozen=True)
class Scores:
    """A predictor's numbers on a set of rows (``evaluate.classification_report``)."""

    n: int
    accuracy: float
    balanced_accuracy: float
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    confusion_matrix: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray
           ) -> Scores:
        return cls(**ev.classification_report(y_true, y_pred))

    def metric(self, name: str) -> float:
        """The gate metric ``name`` (``gate.METRICS``): ``test_accuracy`` is the name the
        CLI and the metadata have always given the accuracy on the holdout."""
        if name == "balanced_accuracy":
            return self.balanced_accuracy
        if name == "test_accuracy":
            return self.accuracy
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Unscored:
    """A model that could not be scored on these rows, and why (no regression check)."""

    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.error}


@dataclass(frozen=True)
class CandidateMetrics:
    """The candidate's holdout scores and how it was trained (metadata ``metrics``)."""

    holdout: Scores
    cv_scores: list[float]
    top_features: list[dict[str, Any]]
    train_rows: int
    stress_memory_rows: int
    memory: str
    gap_rows: int
    learned_axis: dict[str, Any] | None = None
    """For a labeler with a rule: the learned calm/turbulent axis alone."""
    tuning: dict[str, Any] | None = None

    @property
    def cv_accuracy(self) -> float | None:
        return round(float(np.mean(self.cv_scores)), 4) if self.cv_scores else None

    def to_dict(self) -> dict[str, Any]:
        """The keys of the signed metadata's ``metrics`` (and of ``train --json``)."""
        out: dict[str, Any] = {
            "test_accuracy": self.holdout.accuracy,
            "cv_accuracy": self.cv_accuracy,
            "cv_scores": list(self.cv_scores),
            "balanced_accuracy": self.holdout.balanced_accuracy,
            "per_class": self.holdout.per_class,
            "confusion_matrix": self.holdout.confusion_matrix,
            "top_features": self.top_features,
            "holdout_rows": self.holdout.n,
            "train_rows": self.train_rows,
            "stress_memory_rows": self.stress_memory_rows,
            "memory": self.memory,
            "gap_rows": self.gap_rows,
        }
        if self.learned_axis is not None:
            out["learned_axis"] = self.learned_axis
        if self.tuning is not None:
            out["tuning"] = self.tuning
        return out


def scores_dict(scores: dict[str, Scores]) -> dict[str, dict[str, Any]]:
    """Baselines (or any named scores) as the JSON they are reported in."""
    return {name: s.to_dict() for name, s in scores.items()}
