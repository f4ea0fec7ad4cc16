#!/usr/bin/python
# Copyright: QuantShift
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: a thin adapter over ``quantshift_ml.ops.operations.train``."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: quantshift_train
short_description: Train, evaluate and stage a QuantShift regime-model candidate
description:
  - Trains a Random Forest regime classifier on a rolling window of daily bars with
    the C(quantshift_ml) package installed in the host's virtualenv, evaluates it on a
    time-ordered holdout with an embargo gap, scores baselines and the active model
    (incumbent) on the same holdout, and stages the candidate under O(root)/models/staging.
  - The module only adapts arguments and results; all logic lives in C(quantshift_ml).
  - Run it with C(ansible_python_interpreter) set to the virtualenv's python.
  - The deployment gate decision is returned in RV(gate); the playbook asserts on it, so
    a refused gate is a clear play failure without this module failing.
version_added: "0.1.0"
author: QuantShift ML ops
requirements:
  - quantshift_ml (with numpy, pandas, scikit-learn, joblib) in the interpreter running the module
extends_documentation_fragment:
  - quantshift
  - quantshift.source
options:
  keys:
    description:
      - Keys directory on the training host. The staged model's metadata is signed with
        C(signing.key) there (the fleet key, installed from Vault by site.yml on the
        primary only); the incumbent is trusted only when signed by a key in C(trusted/).
    type: path
    default: /etc/quantshift/keys
  data:
    description: Yahoo-format CSV path on the host, for O(source=csv).
    type: path
  as_of:
    description: Last bar of the window (YYYY-MM-DD); default the newest bar.
    type: str
  years:
    description: Length of the rolling training window in years; default the package's (2).
    type: float
  labeler:
    description:
      - Labeler that defines the regimes (see docs/model.md). V(hmm) learns the hindsight
        volatility state of a regime HMM and rules the trend; V(rules) is the old same-day
        rule; V(forward) the next 20 days' realized regime.
    type: str
    choices: [hmm, rules, forward]
    default: hmm
  gap:
    description:
      - Embargo in bars between the training rows and the holdout (raised to the label horizon);
        default the package's (21).
    type: int
  stress_memory:
    description: Keep earlier Crisis and High Vol rows from before the window in the training set.
    type: bool
    default: true
  memory:
    description:
      - Labeled rows from before the window that are trained on; V(auto) is V(all) for C(hmm)
        and V(stress) otherwise (V(window) when O(stress_memory=false)).
    type: str
    choices: [auto, window, stress, all]
    default: auto
  estimator:
    description: V(forest) (Random Forest) or V(ensemble) (soft vote of forest, boosting, logistic regression).
    type: str
    choices: [forest, ensemble]
    default: forest
  combine:
    description:
      - For C(hmm), V(max) makes the model's P(turbulent) the larger of the estimator's and the
        HMM filter's (turbulent when either says so); V(none) uses the estimator's alone (docs/model.md).
    type: str
    choices: [max, none]
    default: max
  tune:
    description: Search the forest's parameters by time-series CV inside the training rows (docs/model.md).
    type: bool
    default: false
  model:
    description:
      - Random Forest parameters that override the defaults (docs/model.md), checked before
        any data is loaded; an unknown key or a bad value fails with the allowed ones.
      - Keys C(n_estimators), C(max_depth) (an integer or V(none)), C(max_features) (a
        fraction in (0, 1], a count, V(sqrt), V(log2) or V(none)), C(min_samples_leaf),
        C(class_weight) (V(none), V(balanced), V(balanced_subsample)), C(random_state).
    type: dict
    default: {}
  gate_metric:
    description: Metric the gate compares; default the labeler's (C(hmm) V(balanced_accuracy), C(rules) V(test_accuracy)).
    type: str
    choices: [test_accuracy, balanced_accuracy]
  min_accuracy:
    description: Absolute floor of O(gate_metric); default the labeler's (C(quantshift_ml.defaults.GATE_BY_LABELER), docs/model.md).
    type: float
  max_regression:
    description:
      - Largest allowed drop of O(gate_metric) against the active model on the same holdout;
        default the package's (C(quantshift_ml.defaults.MAX_REGRESSION)).
    type: float
  beat_baseline:
    description:
      - Baseline the candidate must not trail on the same holdout by more than O(baseline_tolerance);
        V(strongest) is the best of them; V(none) skips the check.
      - Default the labeler's (C(hmm) V(strongest), C(rules) V(majority)).
    type: str
    choices: [strongest, majority, persistence, rule, rv20_threshold, hmm_filter, hmm_filter_tuned, hmm_filter_balanced, hmm_range_tuned, har_rv, gjr_garch, none]
  baseline_tolerance:
    description: How far the candidate may trail that baseline; default the labeler's (C(hmm) V(0.15), C(forward) V(0.10)).
    type: float
  promote:
    description:
      - Also promote the candidate on this host when the gate passes (fails when it does not).
      - Fleet rollouts leave this false and promote host by host with M(quantshift_model).
    type: bool
    default: false
  keep_logs:
    description: Training logs kept; default the package's (C(quantshift_ml.defaults.KEEP_LOGS)).
    type: int
  families:
    description:
      - Families that compete on the out-of-time record; the champion is the one trained, gated and shipped.
      - Default the package's (C(quantshift_ml.defaults.FAMILIES)); the filters need O(labeler=hmm).
    type: list
    elements: str
    choices: [hmm_filter, hmm_range_filter, forest]
  record_months:
    description: Months of record re-fitted at this training (the previous release's record is reused and extended).
    type: int
  switch_margin:
    description: With O(champion_outcome=settled_state), the balanced-accuracy lead over the incumbent family a challenger needs.
    type: float
  champion_outcome:
    description:
      - The outcome the champion is chosen on; default the package's (C(economic), the A/B test's primary outcome).
      - C(settled_state) chooses on balanced accuracy with O(switch_margin).
    type: str
    choices: [economic, forward_vol, forward_drawdown, settled_state]
  switch_confidence:
    description: Share of month-block bootstrap draws in which a challenger must beat the incumbent on that outcome.
    type: float
  champion_guard:
    description: How far a champion's record balanced accuracy may trail the best family's.
    type: float
  champion_floor:
    description: Refuse a champion whose primary outcome on the record is below this (Sharpe for C(economic)).
    type: float
attributes:
  check_mode:
    support: full
    description: Trains and gates in memory and reports what it would stage; writes nothing.
  diff_mode:
    support: none
notes:
  - Results are JSON-native (plain floats, ints, strings, lists, dicts).
"""

EXAMPLES = r"""
- name: Train a candidate on the primary
  quantshift_train:
    root: /opt/quantshift
    source: yfinance
    symbol: SPY
  vars:
    ansible_python_interpreter: /opt/quantshift/venv/bin/python
  register: candidate

- name: Train with other Random Forest parameters (unknown keys are refused)
  quantshift_train:
    root: /opt/quantshift
    model:
      n_estimators: 200
      max_features: sqrt
  register: candidate

- name: Train with the old same-day rule and its gate (test accuracy, a raised floor)
  quantshift_train:
    root: /opt/quantshift
    labeler: rules
    min_accuracy: 0.8
  register: candidate

- name: Refuse to deploy a model the gate refused
  ansible.builtin.assert:
    that: candidate.gate.passed
    fail_msg: "{{ candidate.gate.summary }}"
"""

RETURN = r"""
version:
  description: Candidate version (UTC timestamp).
  returned: always
  type: str
  sample: "20261124-020000"
sha256:
  description: sha256 of the staged candidate pickle.
  returned: when not in check mode
  type: str
  sample: "95fe6ef6c972f6b9b88bf7bc18de3ae0ab647a2545de9e8e34c208d35d8cd490"
artifact:
  description: Path of the staged candidate on the host (metadata beside it, .json).
  returned: when not in check mode
  type: str
  sample: /opt/quantshift/models/staging/regime_classifier_20261124-020000.pkl
metadata:
  description: Path of the candidate's metadata file.
  returned: when not in check mode
  type: str
files:
  description: Every file of the candidate (pickle, metadata, compiled ONNX model when exported).
  returned: when the gate passed and not in check mode
  type: list
  elements: str
compiled:
  description: ONNX export outcome (parity report, or why the model is not compiled).
  returned: when the gate passed and not in check mode
  type: dict
training_log:
  description: The training log (greppable C(Test Accuracy:), C(CV Accuracy:), C(Features:)).
  returned: when not in check mode
  type: str
metrics:
  description: Holdout and walk-forward CV metrics, per-class recall, confusion matrix, top features.
  returned: always
  type: dict
  sample: {"test_accuracy": 0.95, "cv_accuracy": 0.765, "balanced_accuracy": 0.783}
baselines:
  description: Rule-applied-directly, persistence and majority baselines on the same holdout.
  returned: always
  type: dict
incumbent:
  description: The active model's version, sha256 and scores on the same holdout (null if none).
  returned: always
  type: dict
gate:
  description: Gate decision with the numbers it used.
  returned: always
  type: dict
  sample: {"passed": true, "candidate": 0.83, "floor": 0.0, "incumbent": 0.81, "baseline": 0.80,
           "baseline_name": "hmm_filter_tuned", "baseline_tolerance": 0.1, "summary": "gate PASSED ..."}
data:
  description: Data window used (source, first/last bar, train and holdout dates).
  returned: always
  type: dict
promoted:
  description: Whether the candidate was promoted on this host.
  returned: always
  type: bool
family:
  description: The family trained and shipped (the record's champion).
  returned: always
  type: str
  sample: hmm_range_filter
champion:
  description:
    - The policy's decision - family, incumbent family, reason, field, margin, settled rows, each family's
      balanced accuracy on the record with its month-block 95 % interval, months re-fitted and reused.
  returned: always
  type: dict
  sample: {"family": "hmm_range_filter", "incumbent_family": "forest", "settled_rows": 251,
           "reason": "hmm_range_filter replaces forest: ...",
           "scores": {"forest": {"balanced_accuracy": 0.8785, "ci95": [0.7061, 0.9823], "months": 12}}}
"""

from ansible.module_utils.quantshift_common import new_module, run_module

GATE_OPTIONS = ("gate_metric", "min_accuracy", "max_regression", "beat_baseline",
                "baseline_tolerance")
ARGUMENT_SPEC = dict(
    years=dict(type="float"),
    labeler=dict(type="str", default="hmm", choices=["hmm", "rules", "forward"]),
    gap=dict(type="int"),
    stress_memory=dict(type="bool", default=True),
    memory=dict(type="str", default="auto", choices=["auto", "window", "stress", "all"]),
    estimator=dict(type="str", default="forest", choices=["forest", "ensemble"]),
    combine=dict(type="str", default="max", choices=["max", "none"]),
    tune=dict(type="bool", default=False),
    model=dict(type="dict", default={}),
    gate_metric=dict(type="str", choices=["test_accuracy", "balanced_accuracy"]),
    min_accuracy=dict(type="float"),
    max_regression=dict(type="float"),
    beat_baseline=dict(type="str", choices=[
        "strongest", "majority", "persistence", "rule", "rv20_threshold", "hmm_filter",
        "hmm_filter_tuned", "hmm_filter_balanced", "hmm_range_tuned", "har_rv", "gjr_garch",
        "none"]),
    baseline_tolerance=dict(type="float"),
    promote=dict(type="bool", default=False),
    keep_logs=dict(type="int"),
    families=dict(type="list", elements="str",
                  choices=["hmm_filter", "hmm_range_filter", "forest"]),
    record_months=dict(type="int"),
    switch_margin=dict(type="float"),
    champion_outcome=dict(type="str",
                          choices=["economic", "forward_vol", "forward_drawdown", "settled_state"]),
    switch_confidence=dict(type="float"),
    champion_guard=dict(type="float"),
    champion_floor=dict(type="float"),
)


def _config(p):
    """The training configuration; unset options keep the package's defaults."""
    from quantshift_ml.training.config import TrainConfig, model_params

    given = {k: p[k] for k in ("years", "gap", "record_months", "switch_margin",
                               "champion_outcome", "switch_confidence", "champion_guard",
                               "champion_floor") if p[k] is not None}
    if p["families"]:
        given["families"] = tuple(p["families"])
    return TrainConfig(labeler=p["labeler"], stress_memory=p["stress_memory"],
                       memory=p["memory"], estimator=p["estimator"], combine=p["combine"],
                       tune=p["tune"],
                       model=model_params(p["model"]), **given)


def _train(module):
    from pathlib import Path

    from quantshift_ml import defaults
    from quantshift_ml.data.sources import make_source
    from quantshift_ml.ops import operations
    from quantshift_ml.training.gate import gate_for

    p = module.params
    root = Path(p["root"])
    # the gate's renamed options: gate_metric -> metric, min_accuracy -> floor
    names = {"gate_metric": "metric", "min_accuracy": "floor"}
    gate = gate_for(p["labeler"], {names.get(k, k): p[k] for k in GATE_OPTIONS})
    result = operations.train(
        make_source(p["source"], data=p["data"], symbol=p["symbol"], root=root),
        root=root, config=_config(p), gate=gate, as_of=p["as_of"], promote=p["promote"],
        check_mode=module.check_mode, keep_backups=p["keep_backups"],
        keep_logs=defaults.KEEP_LOGS if p["keep_logs"] is None else p["keep_logs"])
    if module.check_mode:
        result["changed"] = True  # it would stage a candidate
    return result


def main():
    module = new_module(ARGUMENT_SPEC, source=True, required_if=[("source", "csv", ("data",))])
    run_module(module, lambda: _train(module))


if __name__ == "__main__":
    main()
