"""Training configuration with the documented defaults (see docs/model.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from quantshift_ml import defaults
from quantshift_ml.errors import UsageError


@dataclass(frozen=True)
class ModelParams:
    """Random Forest hyper-parameters: the seed runbook's (depth 10, seed 42) but for
    ``n_estimators`` and ``max_features``.

    ``n_estimators=50`` instead of 100: with the ``hmm`` target and the max rule,
    50 trees scored the same in the walk-forward (balanced 0.872 against 0.869
    on the S&P 500, 0.755 against 0.752 on NASDAQ) at half the fitting time, which
    the 200 monthly refits of the walk-forward need (docs/model.md, "Speed").

    ``max_features=0.5`` (half the features tried at each split) instead of
    scikit-learn's ``"sqrt"`` (3 of 13): the regimes hinge on single features
    (``atr_ratio`` for Crisis and High Vol), and with 3 candidates per split most
    splits cannot use them and fall back on correlated volatility features whose
    levels differ from one crisis to the next. Chosen on the 2002-2010 months of
    the walk-forward, confirmed on 2011-2018 (docs/model.md, "max_features").
    """

    n_estimators: int = 50
    max_depth: int | None = 10
    max_features: float | str | None = 0.5
    min_samples_leaf: int = 1
    class_weight: str | None = None
    random_state: int = 42
    max_samples: float | None = None
    n_jobs: int = 1


CLASS_WEIGHTS = ("balanced", "balanced_subsample")
MAX_FEATURES_NAMES = ("sqrt", "log2")


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() == "none")


def _positive_int(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    if allow_none and _is_none(value):
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or text != str(int(text)) or int(text) < 1:
        raise UsageError(f"{name} must be a positive integer{' or none' if allow_none else ''}, "
                         f"not {value!r}")
    return int(text)


def _max_features(value: Any) -> float | int | str | None:
    """A fraction in (0, 1], a feature count >= 1, sqrt, log2 or none (every feature)."""
    if _is_none(value):
        return None
    if value in MAX_FEATURES_NAMES:
        return value
    text = str(value).strip()
    if not isinstance(value, bool):
        if isinstance(value, int) or text.isdigit():  # a count of features
            if int(text) >= 1:
                return int(text)
        else:  # a fraction of them
            with contextlib.suppress(ValueError):
                if 0.0 < float(text) <= 1.0:
                    return float(text)
    raise UsageError("max_features must be a fraction in (0, 1], a number of features >= 1, "
                     f"sqrt, log2 or none, not {value!r}")


def _fraction(name: str, value: Any) -> float | None:
    """A fraction in (0, 1], or none."""
    if _is_none(value):
        return None
    with contextlib.suppress(TypeError, ValueError):
        if not isinstance(value, bool) and 0.0 < float(value) <= 1.0:
            return float(value)
    raise UsageError(f"{name} must be a fraction in (0, 1] or none, not {value!r}")


def model_params(overrides: Mapping[str, Any] | None = None) -> ModelParams:
    """ModelParams from user input (CLI strings, playbook YAML), checked key by key.

    Why not hand the mapping to scikit-learn as is: its errors come at fit time,
    after the data was loaded, and name its own parameters; an operator's typo
    (``max_featurs``) would even be passed through silently by a ``**kwargs``.
    """
    allowed = [f.name for f in fields(ModelParams) if f.name != "n_jobs"]
    values: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if key not in allowed:
            raise UsageError(f"unknown Random Forest parameter {key!r}; "
                             f"allowed: {', '.join(allowed)}")
        if value is None and key in ("n_estimators", "min_samples_leaf", "random_state"):
            continue  # unset: keep the default
        if key in ("n_estimators", "min_samples_leaf", "max_depth"):
            values[key] = _positive_int(key, value, allow_none=key == "max_depth")
        elif key == "max_features":
            values[key] = _max_features(value)
        elif key == "max_samples":
            values[key] = _fraction(key, value)
        elif key == "class_weight":
            if not _is_none(value) and value not in CLASS_WEIGHTS:
                raise UsageError(f"class_weight must be none, {' or '.join(CLASS_WEIGHTS)}, "
                                 f"not {value!r}")
            values[key] = None if _is_none(value) else value
        elif key == "random_state":
            try:
                values[key] = int(value)
            except (TypeError, ValueError):
                raise UsageError(f"random_state must be an integer, not {value!r}") from None
    return replace(ModelParams(), **values)


MEMORIES = ("auto", "window", "stress", "all")
ESTIMATORS = ("forest", "ensemble")
COMBINES = ("max", "none")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run, recorded in the model metadata.

    ``gap`` is the embargo in bars between the last training row and the first
    evaluation row; it is at least the labeler's horizon so no training label
    peeks into the evaluation period.

    ``memory`` says which labeled rows from before the window are trained on:
    ``window`` none, ``stress`` the earlier Crisis/High Vol (turbulent) rows,
    ``all`` every earlier row (an expanding window). ``auto`` is ``all`` for the
    ``hmm`` labeler (volatility regimes recur across decades and a calm 2-year
    window holds no turbulent day to learn from: measured in docs/model.md) and
    ``stress`` for the others; ``stress_memory=False`` turns ``auto`` into
    ``window``. The holdout is always the newest part of the window.
    ``estimator``: ``forest`` (Random Forest) or ``ensemble`` (soft vote of the
    forest, gradient boosting and logistic regression). ``combine``: ``max`` makes
    the model's P(turbulent) the larger of the estimator's and the HMM filter's
    (``hmm`` labeler; turbulent when either says so), ``none`` the estimator's
    alone (docs/model.md). ``tune`` searches the
    forest's parameters by time-series CV inside the training rows.
    """

    years: float = defaults.YEARS
    labeler: str = "hmm"
    holdout_fraction: float = 0.2
    gap: int = defaults.GAP
    cv_folds: int = 5
    stress_memory: bool = True
    stress_classes: tuple[str, ...] = ("Crisis", "High Vol", "turbulent")
    model: ModelParams = field(default_factory=ModelParams)
    memory: str = "auto"
    estimator: str = "forest"
    combine: str = "max"
    tune: bool = False
    tune_trials: int = 8
    families: tuple[str, ...] = defaults.FAMILIES
    record_months: int = defaults.RECORD_MONTHS
    switch_margin: float = defaults.SWITCH_MARGIN
    champion_outcome: str = defaults.CHAMPION_OUTCOME
    switch_confidence: float = defaults.SWITCH_CONFIDENCE
    champion_guard: float = defaults.CHAMPION_GUARD
    champion_floor: float | None = None

    def __post_init__(self) -> None:
        self._check_champion()
        if not self.years > 0:
            raise UsageError(f"years must be positive, got {self.years}")
        if self.gap < 0:
            raise UsageError(f"gap must be >= 0 bars, got {self.gap}")
        if self.memory not in MEMORIES:
            raise UsageError(f"memory must be one of {', '.join(MEMORIES)}, not {self.memory!r}")
        if self.estimator not in ESTIMATORS:
            raise UsageError(f"estimator must be one of {', '.join(ESTIMATORS)}, "
                             f"not {self.estimator!r}")
        if self.combine not in COMBINES:
            raise UsageError(f"combine must be one of {', '.join(COMBINES)}, "
                             f"not {self.combine!r}")
        if self.tune_trials < 1:
            raise UsageError(f"tune_trials must be >= 1, got {self.tune_trials}")

    def _check_champion(self) -> None:
        """The champion's settings: known families, at least one, a sane record and margin."""
        unknown = [f for f in self.families if f not in defaults.FAMILIES]
        if unknown or not self.families:
            raise UsageError(f"families must be a non-empty list of {', '.join(defaults.FAMILIES)}"
                             f"; got {', '.join(self.families) or 'none'}")
        if not 1 <= self.record_months <= 240:
            raise UsageError(f"record_months must be within 1..240, got {self.record_months}")
        if not 0.0 <= self.switch_margin < 1.0:
            raise UsageError(f"switch_margin must be within 0..1, got {self.switch_margin}")
        if self.champion_outcome not in defaults.CHAMPION_OUTCOMES:
            raise UsageError(f"champion_outcome must be one of "
                             f"{', '.join(defaults.CHAMPION_OUTCOMES)}, not "
                             f"{self.champion_outcome!r}")
        if not 0.5 <= self.switch_confidence < 1.0 or not 0.0 <= self.champion_guard <= 1.0:
            raise UsageError(f"switch_confidence must be within 0.5..1 and champion_guard "
                             f"within 0..1, got {self.switch_confidence} and "
                             f"{self.champion_guard}")

    def memory_for(self, labeler: str) -> str:
        """The memory actually used (``auto`` resolved for this labeler)."""
        if self.memory != "auto":
            return self.memory
        if not self.stress_memory:
            return "window"
        return "all" if labeler == "hmm" else "stress"

    def effective_gap(self, horizon: int) -> int:
        """The embargo actually used: never shorter than the label horizon."""
        return max(self.gap, horizon)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stress_classes"] = list(self.stress_classes)
        d["families"] = list(self.families)
        return d
