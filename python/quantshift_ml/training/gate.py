"""The deployment gate: beat the strongest fair baseline, no regression vs production.

Every comparison uses the same rows: the candidate, the incumbent (the model
active on the host) and every baseline are scored on the candidate's own holdout,
the freshest data. Defaults differ per labeler (``LABELER_DEFAULTS``) and are
backed by the walk-forward report (docs/model.md):

* ``hmm`` (default): balanced accuracy, no absolute floor (the ``rules`` floor would
  refuse most retrains of a target whose best classic baseline scores about that), and
  the candidate may trail the strongest baseline on its ~100-day holdout by at
  most ``baseline_tolerance`` (0.10): such a holdout is noisy, and 0.10 was chosen
  from the refusal rates the walk-forward reports for each value (S&P 500: 25 % of
  monthly retrains refused at 0.05, 17 % at 0.10, 8 % at 0.20; NASDAQ 14 %, 9 %, 5 %).
* ``rules``: the seed's gate (test accuracy, the runbook's floor, beat majority), kept for
  continuity: its "rule" baseline is the label itself, which no model can beat.
* ``forward``: balanced accuracy, strongest baseline, no floor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from quantshift_ml import defaults
from quantshift_ml.errors import UsageError

if TYPE_CHECKING:
    from quantshift_ml.training.results import Scores

METRICS = ("test_accuracy", "balanced_accuracy")
"""Gate metrics, read from the candidate's, the incumbent's and each baseline's
``Scores`` alike (``Scores.metric``)."""
BASELINE_CHOICES = ("strongest", "majority", "persistence", "rule", "rv20_threshold",
                    "hmm_filter", "hmm_filter_tuned", "hmm_filter_balanced", "hmm_range_tuned",
                    "har_rv", "gjr_garch")
REFERENCES = ("persistence_hindsight",)
"""Reported for reference, never "strongest": they use data not known at the time."""
NOT_COMPETITORS = {"rules": ("rule", *REFERENCES), "hmm": REFERENCES, "forward": REFERENCES}
"""Baselines that are a labeler's own definition or use the future, never "strongest"."""


@dataclass(frozen=True)
class GateConfig:
    metric: str = "balanced_accuracy"
    floor: float = 0.0
    max_regression: float = defaults.MAX_REGRESSION
    beat_baseline: str | None = "strongest"
    """A baseline the candidate must not trail on the holdout (by more than
    ``baseline_tolerance``), ``strongest`` for the best of them, or None."""
    baseline_tolerance: float = 0.10
    labeler: str = "hmm"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise UsageError(f"unknown gate metric {self.metric!r}: choose "
                             f"{', '.join(METRICS)}")
        if not 0.0 <= self.floor <= 1.0:
            raise UsageError(f"--min-accuracy must be within 0..1, got {self.floor}")
        if self.beat_baseline not in (None, *BASELINE_CHOICES):
            raise UsageError(f"unknown baseline {self.beat_baseline!r}: choose "
                             f"{', '.join(BASELINE_CHOICES)} or none")
        if not 0.0 <= self.max_regression <= 1.0:
            raise UsageError(f"--max-regression must be within 0..1, got {self.max_regression}")
        if not 0.0 <= self.baseline_tolerance <= 1.0:
            raise UsageError("--baseline-tolerance must be within 0..1, got "
                             f"{self.baseline_tolerance}")


LABELER_DEFAULTS: dict[str, dict[str, Any]] = defaults.GATE_BY_LABELER
"""Each labeler's gate, defined in ``quantshift_ml.defaults``."""


def gate_for(labeler: str, overrides: Mapping[str, Any] | None = None) -> GateConfig:
    """The labeler's default gate with the given (non-None) settings on top.

    ``beat_baseline="none"`` turns the baseline check off.
    """
    values = {**LABELER_DEFAULTS.get(labeler, {}), "labeler": labeler}
    for key, value in (overrides or {}).items():
        if value is None or value == "":
            continue
        values[key] = None if (key == "beat_baseline" and value == "none") else value
    return replace(GateConfig(), **values)


def strongest(baselines: Mapping[str, Scores], metric: str, labeler: str
              ) -> tuple[str, float]:
    """Name and value of the best baseline on ``metric`` (own-definition ones excluded)."""
    skip = NOT_COMPETITORS.get(labeler, ())
    scored = [(name, scores.metric(metric)) for name, scores in baselines.items()
              if name not in skip]
    if not scored:
        raise UsageError("no baseline to compare with")
    return max(scored, key=lambda t: t[1])


def _baseline_check(candidate: float, gate: GateConfig, baselines: Mapping[str, Scores] | None
                    ) -> tuple[str | None, float | None, str | None]:
    """(baseline name, its value, a refusal reason or None)."""
    if not gate.beat_baseline or not baselines:
        return None, None, None
    if gate.beat_baseline == "strongest":
        name, value = strongest(baselines, gate.metric, gate.labeler)
    elif gate.beat_baseline in baselines:
        name = gate.beat_baseline
        value = baselines[name].metric(gate.metric)
    else:
        return None, None, None
    tol = gate.baseline_tolerance
    if candidate + tol <= value:
        trail = f" by more than {tol:.3f}" if tol else ""
        return name, value, (f"{gate.metric} {candidate:.3f} trails the {name} baseline "
                             f"{value:.3f} on the same holdout{trail}" if tol else
                             f"{gate.metric} {candidate:.3f} does not beat the {name} baseline "
                             f"{value:.3f} on the same holdout{trail}")
    return name, value, None


def decide(scores: Scores, incumbent: Scores | None, gate: GateConfig,
           baselines: Mapping[str, Scores] | None = None) -> dict[str, Any]:
    """Return the decision with every number it used, for logs, alerts and Ansible.

    ``scores``: the candidate's on its holdout; ``incumbent``: the production model's
    on the same rows (None when there is none or it could not be scored).
    """
    candidate = scores.metric(gate.metric)
    reasons: list[str] = []
    if candidate < gate.floor:
        reasons.append(f"{gate.metric} {candidate:.3f} is below the floor {gate.floor:.3f}")
    inc_value: float | None = None
    if incumbent is not None:
        inc_value = incumbent.metric(gate.metric)
        if candidate < inc_value - gate.max_regression:
            reasons.append(
                f"{gate.metric} {candidate:.3f} is worse than the incumbent's {inc_value:.3f} "
                f"on the same holdout by more than {gate.max_regression:.3f}"
            )
    base_name, base_value, why = _baseline_check(candidate, gate, baselines)
    if why:
        reasons.append(why)
    passed = not reasons
    summary = (f"gate {'PASSED' if passed else 'REFUSED'}: {gate.metric} candidate "
               f"{candidate:.3f}, floor {gate.floor:.3f}, incumbent "
               f"{'none' if inc_value is None else f'{inc_value:.3f}'} "
               f"(max regression {gate.max_regression:.3f}), {base_name or 'no'} "
               f"baseline {'-' if base_value is None else f'{base_value:.3f}'}"
               f"{f' (tolerance {gate.baseline_tolerance:.3f})' if base_name else ''}")
    return {"passed": passed, "candidate": round(candidate, 4),
            "incumbent": None if inc_value is None else round(inc_value, 4),
            "baseline": None if base_value is None else round(base_value, 4),
            "baseline_name": base_name,
            "reasons": reasons, "summary": summary, **asdict(gate)}


def with_record_check(decision: dict[str, Any], check: Mapping[str, Any] | None
                      ) -> dict[str, Any]:
    """The holdout decision joined with the champion's record check (issue 31: floor and
    no regression on the primary outcome over the record as well as on the holdout)."""
    if not check:
        return decision
    reasons = [*decision["reasons"], *check.get("reasons", [])]
    passed = not reasons
    summary = decision["summary"].replace("PASSED" if decision["passed"] else "REFUSED",
                                          "PASSED" if passed else "REFUSED", 1)
    inc = check["incumbent_value"]
    summary += (f"; record {check['outcome']} {check['value']:.3f} (incumbent "
                f"{'-' if inc is None else inc}, floor "
                f"{'-' if check['floor'] is None else check['floor']})")
    return {**decision, "passed": passed, "reasons": reasons, "summary": summary,
            "record": dict(check)}


def meets_floor(value: float | None, floor: float) -> bool:
    """An evaluated model's gate metric against the floor (no score never meets it)."""
    return value is not None and float(value) >= floor


def rollback_decision(evaluation: Mapping[str, Any], *, force: bool = False) -> dict[str, Any]:
    """May the fleet roll back to this evaluated backup? Decided here for CLI and playbook.

    A backup below its labeler's floor (or the given one) is refused unless
    forced: it was good once, but on fresh data it no longer is. Forcing is for
    the emergency where any trusted model beats the broken one running.
    """
    value, floor = evaluation.get("value"), float(evaluation.get("floor") or 0.0)
    shown = "no score" if value is None else round(float(value), 4)
    base = (f"Backup {evaluation.get('version')} scores {evaluation.get('metric')} {shown} "
            "on fresh data")
    if meets_floor(value, floor):
        return {"allowed": True, "forced": False, "message": f"{base} (floor {floor})"}
    if force:
        return {"allowed": True, "forced": True,
                "message": f"{base}, below the floor {floor}; forced"}
    return {"allowed": False, "forced": False,
            "message": f"{base}, below the floor {floor}; refusing"}
