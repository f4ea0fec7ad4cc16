"""The monitor's and the drift checks' thresholds, in a module of their own.

Why here: the command-line parser makes one option per field, so every command
(``serve`` included, which starts on every host) imports them; ``drift`` and
``monitor`` need pandas and the feature code, these two dataclasses need nothing.
Both modules re-export them under their old names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DriftThresholds:
    """The drift checks' thresholds (monitor options; docs/monitoring.md says why)."""

    importance_rank_warn: float = 0.75
    importance_rank_crit: float = 0.6
    importance_top_changes: int = 3
    drift_days: int = 21
    drift_psi: float = 1.0
    drift_ks: float = 0.8
    drift_novel: float = 0.5
    drift_warn_share: float = 0.1
    drift_crit_share: float = 0.2


@dataclass(frozen=True)
class Thresholds(DriftThresholds):
    """Every one is a CLI option (and a key of the thresholds file); the accuracy ones
    default per labeler; the drift ones are ``DriftThresholds``'s.

    ``None`` for an accuracy threshold means the active model's labeler's value
    (``ACCURACY_BY_LABELER``): the runbook's 0.85 / 0.75 for ``rules``, and for
    ``hmm`` the 10th and 2nd percentiles of the monthly walk-forward accuracy of
    the default model (docs/monitoring.md), so a warning means "worse than nine
    months in ten", not "an ordinary month".
    """

    accuracy_warn: float | None = None
    accuracy_crit: float | None = None
    live_accuracy_warn: float | None = None
    live_accuracy_crit: float | None = None
    live_min_samples: int = 20
    live_vol_warn: float = 0.24
    live_vol_crit: float = 0.0
    live_excess_warn: float = -0.026
    age_warn_days: float = 30.0
    age_crit_days: float = 45.0
    disk_warn_free: float = 0.15
    disk_crit_free: float = 0.05
    backups_min: int = 3
