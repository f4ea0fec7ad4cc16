"""The monitor's one thresholds object: its layers' precedence and the labeler defaults."""

from __future__ import annotations

import pytest

from quantshift_ml.errors import UsageError
from quantshift_ml.monitoring import drift, monitor
from quantshift_ml.monitoring.thresholds import (
    DRIFT_FIELDS,
    Thresholds,
    layered,
    read_values,
    resolve,
)


def test_each_layer_overrides_the_one_below() -> None:
    file_values = {"age_warn_days": 10, "backups_min": 2.0, "drift_days": 5}
    inline = {"age_warn_days": 20}
    options = {"age_warn_days": 40.0}
    t = layered(file_values, inline, options)
    assert t.age_warn_days == 40.0 and t.drift_days == 5
    assert t.backups_min == 2 and isinstance(t.backups_min, int)  # counts made whole
    assert layered(file_values, inline).age_warn_days == 20
    assert layered().age_warn_days == Thresholds().age_warn_days


def test_the_drift_command_takes_its_fields_only() -> None:
    t = layered({"age_warn_days": 1.0, "drift_psi": 2.0}, names=DRIFT_FIELDS)
    assert t.drift_psi == 2.0 and t.age_warn_days == Thresholds().age_warn_days


def test_the_labeler_fills_only_what_no_layer_set() -> None:
    hmm = resolve(Thresholds(), "hmm")
    assert (hmm.accuracy_warn, hmm.accuracy_crit) == (0.70, 0.55)
    assert resolve(Thresholds(), None).live_accuracy_crit == 0.75  # rules
    own = resolve(layered({"accuracy_warn": 0.9}), "hmm")
    assert own.accuracy_warn == 0.9 and own.accuracy_crit == 0.55


def test_one_object_under_every_old_name() -> None:
    assert monitor.Thresholds is drift.DriftThresholds is Thresholds


def test_a_bad_value_is_refused_by_name() -> None:
    with pytest.raises(UsageError, match="backups_min must be a whole number"):
        read_values("inline", '{"backups_min": 2.5}')
    with pytest.raises(UsageError, match="unknown thresholds"):
        read_values("inline", '{"no_such": 1}')
