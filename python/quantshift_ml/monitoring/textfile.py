"""The monitor's Prometheus textfile (node_exporter's textfile collector).

Written through ``prometheus_client`` (a registry of its own, as the service's
``/metrics``), so the exposition format, the escaping of label values and the
``# HELP`` / ``# TYPE`` lines are the library's, not hand-made strings; a test
keeps the file clean under ``promtool check metrics``. Every gauge carries a
``host`` label; the drift checks add one PSI and one KS gauge per feature, the
A/B check one gauge per arm.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from quantshift_ml.errors import UsageError
from quantshift_ml.monitoring.checks import EXIT

GAUGES: dict[str, tuple[str, float, str]] = {
    "quantshift_model_age_seconds": ("age_days", 86400.0, "Seconds since the model trained"),
    "quantshift_model_holdout_accuracy": ("holdout_accuracy", 1.0,
                                          "Holdout accuracy of the active model"),
    "quantshift_model_live_accuracy": ("live_accuracy", 1.0,
                                       "Live accuracy of the active version, settled bars"),
    "quantshift_backups": ("backups", 1.0, "Intact backups (signature and sha256s check out)"),
    "quantshift_disk_free_ratio": ("disk_free", 1.0, "Free share of the models' filesystem"),
}
"""Gauge -> (the check whose value it shows, scale, HELP text)."""

DRIFT_HELP = {
    "quantshift_importance_rank_correlation":
        "Spearman rank correlation of the active version's SHAP importances with the previous",
    "quantshift_input_drift_share": "Share of input features drifted against the model's window",
    "quantshift_input_drift_psi": "Population stability index of a feature, recent vs window",
    "quantshift_input_drift_ks": "Two-sample Kolmogorov-Smirnov D of a feature, recent vs window",
}


class Gauges:
    """A fresh registry and the gauges added to it, each with the ``host`` label first."""

    def __init__(self, host: str) -> None:
        try:
            from prometheus_client import CollectorRegistry
        except ImportError as exc:
            raise UsageError("the monitor's textfile needs prometheus_client: install "
                             "quantshift-ml[monitor]") from exc
        self.registry = CollectorRegistry()
        self.host = host
        self._gauges: dict[str, Any] = {}

    def set(self, name: str, help_text: str, value: float,
            labels: Mapping[str, str] | None = None) -> None:
        """Set one sample of gauge ``name`` (registered on its first sample)."""
        from prometheus_client import Gauge

        extra = dict(labels or {})
        gauge = self._gauges.get(name)
        if gauge is None:
            gauge = self._gauges[name] = Gauge(name, help_text, ["host", *extra],
                                               registry=self.registry)
        gauge.labels(host=self.host, **extra).set(float(value))

    def render(self) -> str:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry)).decode()


def textfile(report: dict[str, Any]) -> str:
    """Prometheus exposition for node_exporter's textfile collector."""
    out = Gauges(report["host"].replace('"', ""))
    out.set("quantshift_model_status",
            "Monitor status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN", EXIT[report["status"]])
    values = {c["name"]: c["value"] for c in report["checks"]}
    for metric, (check, scale, help_text) in GAUGES.items():
        v = values.get(check)
        if isinstance(v, (int, float)):
            out.set(metric, help_text, float(v) * scale)
    _drift_gauges(report, out)
    ab_gauges(next((c for c in report["checks"] if c["name"] == "ab_test"), None), out)
    _live_outcome_gauges(report, out)
    out.set("quantshift_monitor_last_run_timestamp_seconds", "When the monitor last ran",
            round(time.time()))
    return out.render()


def _live_outcome_gauges(report: dict[str, Any], out: Gauges) -> None:
    """The served model on what the market did (the ``live_outcomes`` check)."""
    rep = next((c.get("outcomes") for c in report["checks"] if c["name"] == "live_outcomes"),
               None) or {}
    fv, eco = rep.get("forward_vol") or {}, rep.get("economic") or {}
    help_text = ("The served model on each outcome: forward_vol accuracy, economic return "
                 "and the index's over the scored bars")
    for outcome, figure, value in (("forward_vol", "accuracy", fv.get("accuracy")),
                                   ("economic", "return", eco.get("return")),
                                   ("economic", "index_return", eco.get("index_return"))):
        if isinstance(value, (int, float)):
            out.set("quantshift_live_outcome", help_text, value,
                    {"outcome": outcome, "figure": figure})
    if isinstance(fv.get("samples"), int):
        out.set("quantshift_live_outcome_samples", "Settled samples of the served model per "
                "outcome", fv["samples"], {"outcome": "forward_vol"})


def _drift_gauges(report: dict[str, Any], out: Gauges) -> None:
    """Gauges of the drift checks: one per check, and PSI / KS D per feature."""
    checks = {c["name"]: c for c in report["checks"]}
    for metric, name in (("quantshift_importance_rank_correlation", "importance_drift"),
                         ("quantshift_input_drift_share", "input_drift")):
        v = (checks.get(name) or {}).get("value")
        if isinstance(v, (int, float)):
            out.set(metric, DRIFT_HELP[metric], v)
    features = (checks.get("input_drift") or {}).get("features") or []
    for metric, key in (("quantshift_input_drift_psi", "psi"),
                        ("quantshift_input_drift_ks", "ks")):
        for f in features:
            out.set(metric, DRIFT_HELP[metric], f[key], {"feature": str(f["feature"])})


def ab_gauges(check: dict[str, Any] | None, out: Gauges) -> None:
    """Gauges of the ``ab_test`` check: accuracy and samples per arm, p-value."""
    rep = (check or {}).get("ab")
    if not rep:
        return
    for arm, m in rep["arms"].items():
        if m["accuracy"] is not None:
            out.set("quantshift_ab_accuracy",
                    "Accuracy of each A/B arm on its settled samples", m["accuracy"], {"arm": arm})
    for arm, m in rep["arms"].items():
        out.set("quantshift_ab_samples", "Settled samples of each A/B arm", m["samples"],
                {"arm": arm})
    if rep.get("p_value") is not None:
        out.set("quantshift_ab_p_value", "p-value of ml against rules on the primary outcome, "
                "same bars", rep["p_value"])
    outcome_gauges(rep.get("outcomes") or {}, out)


HEADLINE = {"forward_vol": "accuracy", "forward_drawdown": "accuracy",
            "economic": "sharpe", "settled_state": "accuracy"}
"""The one figure per outcome and arm that the gauges and the console show: the one
the paired test compares (accuracy for McNemar, Sharpe for economic)."""


def outcome_gauges(outcomes: dict[str, Any], out: Gauges) -> None:
    """Per outcome and arm its headline figure; per outcome the paired p-value."""
    for name, o in outcomes.items():
        for arm, figures in o["arms"].items():
            value = figures.get(HEADLINE[name])
            if value is not None:
                out.set("quantshift_ab_outcome", "Each A/B arm on each outcome (accuracy; "
                        "Sharpe for economic)", value,
                        {"outcome": name, "arm": arm, "figure": HEADLINE[name]})
        if o.get("p_value") is not None:
            out.set("quantshift_ab_outcome_p_value", "Paired p-value of ml against rules per "
                    "outcome", o["p_value"], {"outcome": name})
