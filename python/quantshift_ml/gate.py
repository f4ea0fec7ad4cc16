"""The deployment gate: an absolute floor, and no significant regression vs production.

Both comparisons use the same numbers: the candidate and the incumbent (the model
active on the host) are scored on the candidate's own holdout, the freshest data.
Defaults per labeler are documented in docs/model.md and backed by the
walk-forward report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from quantshift_ml.errors import UsageError

GATE_METRICS = {"test_accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy"}


@dataclass(frozen=True)
class GateConfig:
    metric: str = "test_accuracy"
    floor: float = 0.75
    max_regression: float = 0.05
    beat_baseline: str | None = "majority"
    """A baseline (majority, persistence, rule) the candidate must beat on the holdout,
    or None. Beating "always the most frequent regime" is the least a model must do."""

    def __post_init__(self) -> None:
        if self.metric not in GATE_METRICS:
            raise UsageError(f"unknown gate metric {self.metric!r}: choose "
                             f"{', '.join(GATE_METRICS)}")
        if not 0.0 <= self.floor <= 1.0:
            raise UsageError(f"--min-accuracy must be within 0..1, got {self.floor}")
        if self.beat_baseline not in (None, "majority", "persistence", "rule"):
            raise UsageError(f"unknown baseline {self.beat_baseline!r}: choose majority, "
                             "persistence, rule or none")
        if not 0.0 <= self.max_regression <= 1.0:
            raise UsageError(f"--max-regression must be within 0..1, got {self.max_regression}")


def decide(metrics: dict[str, Any], incumbent: dict[str, Any] | None, gate: GateConfig,
           baselines: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the decision with every number it used, for logs, alerts and Ansible."""
    candidate = float(metrics[gate.metric])
    reasons: list[str] = []
    if candidate < gate.floor:
        reasons.append(f"{gate.metric} {candidate:.3f} is below the floor {gate.floor:.3f}")
    inc_value: float | None = None
    if incumbent is not None and "error" not in incumbent:
        inc_value = float(incumbent[GATE_METRICS[gate.metric]])
        if candidate < inc_value - gate.max_regression:
            reasons.append(
                f"{gate.metric} {candidate:.3f} is worse than the incumbent's {inc_value:.3f} "
                f"on the same holdout by more than {gate.max_regression:.3f}"
            )
    base_value: float | None = None
    if gate.beat_baseline and baselines and gate.beat_baseline in baselines:
        base_value = float(baselines[gate.beat_baseline][GATE_METRICS[gate.metric]])
        if candidate <= base_value:
            reasons.append(f"{gate.metric} {candidate:.3f} does not beat the "
                           f"{gate.beat_baseline} baseline {base_value:.3f} on the same holdout")
    passed = not reasons
    summary = (f"gate {'PASSED' if passed else 'REFUSED'}: {gate.metric} candidate "
               f"{candidate:.3f}, floor {gate.floor:.3f}, incumbent "
               f"{'none' if inc_value is None else f'{inc_value:.3f}'} "
               f"(max regression {gate.max_regression:.3f}), {gate.beat_baseline or 'no'} "
               f"baseline {'-' if base_value is None else f'{base_value:.3f}'}")
    return {"passed": passed, "candidate": round(candidate, 4),
            "incumbent": None if inc_value is None else round(inc_value, 4),
            "baseline": None if base_value is None else round(base_value, 4),
            "reasons": reasons, "summary": summary, **asdict(gate)}
