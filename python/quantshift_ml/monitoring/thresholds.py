"""The monitor's thresholds: one object, and the one place its values are resolved.

Why a module of its own: the command-line parser makes one option per field, so
every command (``serve`` included, which starts on every host) imports them;
``drift`` and ``monitor`` need pandas and the feature code, this needs nothing.

Precedence, lowest first (``layered`` then ``resolve``): the field's default; the
active model's labeler's accuracy defaults (``ACCURACY_BY_LABELER``, only where a
field is ``None``); the thresholds file (``--thresholds FILE``, default
``ROOT/etc/monitor.json``, written by ``site.yml`` from the fleet's
``quantshift_monitor_thresholds``); ``--thresholds-json``; then each
``--<threshold>`` option. ``drift`` reads the ``DRIFT_FIELDS`` subset of the same
object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from quantshift_ml.errors import UsageError

ACCURACY_BY_LABELER: dict[str, tuple[float, float]] = {
    "rules": (0.85, 0.75), "forward": (0.40, 0.30), "hmm": (0.70, 0.55)}
"""(warn, critical) accuracy thresholds per labeler, where ``Thresholds`` leaves them None."""


@dataclass(frozen=True)
class Thresholds:
    """Every monitor threshold; each is a CLI option and a key of the thresholds file.

    ``None`` for an accuracy threshold means the active model's labeler's value
    (``ACCURACY_BY_LABELER``): the runbook's 0.85 / 0.75 for ``rules``, and for
    ``hmm`` the 10th and 2nd percentiles of the monthly walk-forward accuracy of
    the default model (docs/monitoring.md), so a warning means "worse than nine
    months in ten", not "an ordinary month". The drift fields are docs/monitoring.md's.
    """

    importance_rank_warn: float = 0.75
    importance_rank_crit: float = 0.6
    importance_top_changes: int = 3
    drift_days: int = 21
    drift_psi: float = 1.0
    drift_ks: float = 0.8
    drift_novel: float = 0.5
    drift_warn_share: float = 0.1
    drift_crit_share: float = 0.2
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


DriftThresholds = Thresholds
"""The same object: the drift checks read only its ``DRIFT_FIELDS`` (old name kept)."""

DRIFT_FIELDS: tuple[str, ...] = (
    "importance_rank_warn", "importance_rank_crit", "importance_top_changes", "drift_days",
    "drift_psi", "drift_ks", "drift_novel", "drift_warn_share", "drift_crit_share")
"""The thresholds the ``drift`` command takes as options."""

ALL_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Thresholds))


def resolve(t: Thresholds, labeler: str | None) -> Thresholds:
    """``t`` with every unset accuracy threshold taken from the labeler's defaults."""
    warn, crit = ACCURACY_BY_LABELER.get(labeler or "rules", ACCURACY_BY_LABELER["rules"])
    defaults: dict[str, Any] = {"accuracy_warn": warn, "accuracy_crit": crit,
                                "live_accuracy_warn": warn, "live_accuracy_crit": crit}
    return replace(t, **{k: v for k, v in defaults.items() if getattr(t, k) is None})


def read_values(path: Path | str, text: str | None = None) -> dict[str, Any]:
    """The file's (or ``text``'s) thresholds; unknown names and wrong types are refused."""
    try:
        data = json.loads(text if text is not None else Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"thresholds file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"thresholds file {path}: expected a JSON object")
    known = {f.name: f for f in fields(Thresholds)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UsageError(f"thresholds file {path}: unknown thresholds {unknown}; "
                         f"known: {', '.join(sorted(known))}")
    for name, value in data.items():
        if value is None and known[name].default is None:
            continue  # the accuracy thresholds: null means the labeler's default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"thresholds file {path}: {name} must be a number, not {value!r}")
        if isinstance(known[name].default, int) and value != int(value):
            raise UsageError(f"thresholds file {path}: {name} must be a whole number, "
                             f"not {value!r}")
    return data


def layered(*layers: Mapping[str, Any], names: tuple[str, ...] = ALL_FIELDS) -> Thresholds:
    """Defaults, then each layer over the one before (lowest first), ``names`` only.

    A layer leaves out what it does not set. Counts arrive as JSON numbers; the
    file check made them whole, so they are made ``int`` here.
    """
    values: dict[str, Any] = {}
    for layer in layers:
        values.update({k: v for k, v in layer.items() if k in names})
    for f in fields(Thresholds):
        if isinstance(f.default, int) and values.get(f.name) is not None:
            values[f.name] = int(values[f.name])
    return Thresholds(**values)
