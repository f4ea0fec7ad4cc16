"""The monitor's Prometheus textfile (node_exporter's textfile collector).

Every gauge carries ``# HELP`` and ``# TYPE`` lines and a ``host`` label; the drift
checks add one PSI and one KS gauge per feature, the A/B check one gauge per arm.
"""

from __future__ import annotations

import time
from typing import Any

from quantshift_ml.checks import EXIT


def textfile(report: dict[str, Any]) -> str:
    """Prometheus exposition for node_exporter's textfile collector."""
    host = report["host"].replace('"', "")
    lab = f'host="{host}"'
    values = {c["name"]: c["value"] for c in report["checks"]}
    lines = [
        "# HELP quantshift_model_status Monitor status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
        "# TYPE quantshift_model_status gauge",
        f"quantshift_model_status{{{lab}}} {EXIT[report['status']]}",
    ]
    gauges = {
        "quantshift_model_age_seconds": ("age_days", 86400.0, "Seconds since the model trained"),
        "quantshift_model_holdout_accuracy": ("holdout_accuracy", 1.0,
                                              "Holdout accuracy of the active model"),
        "quantshift_model_live_accuracy": ("live_accuracy", 1.0,
                                           "Live accuracy of the active version, settled bars"),
        "quantshift_backups": ("backups", 1.0, "Backups kept in the store"),
        "quantshift_disk_free_ratio": ("disk_free", 1.0, "Free share of the models' filesystem"),
    }
    for metric, (check, scale, help_text) in gauges.items():
        v = values.get(check)
        if isinstance(v, (int, float)):
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge",
                      f"{metric}{{{lab}}} {float(v) * scale:g}"]
    lines += _drift_gauges(report, lab)
    from quantshift_ml.ab_report import gauges as ab_gauges

    lines += ab_gauges(next((c for c in report["checks"] if c["name"] == "ab_test"), None), lab)
    lines += ["# HELP quantshift_monitor_last_run_timestamp_seconds When the monitor last ran",
              "# TYPE quantshift_monitor_last_run_timestamp_seconds gauge",
              f"quantshift_monitor_last_run_timestamp_seconds{{{lab}}} {time.time():.0f}"]
    return "\n".join(lines) + "\n"


_DRIFT_HELP = {
    "quantshift_importance_rank_correlation":
        "Spearman rank correlation of the active version's SHAP importances with the previous",
    "quantshift_input_drift_share": "Share of input features drifted against the model's window",
    "quantshift_input_drift_psi": "Population stability index of a feature, recent vs window",
    "quantshift_input_drift_ks": "Two-sample Kolmogorov-Smirnov D of a feature, recent vs window",
}


def _drift_gauges(report: dict[str, Any], lab: str) -> list[str]:
    """Gauges of the drift checks: one per check, and PSI / KS D per feature."""
    checks = {c["name"]: c for c in report["checks"]}
    samples: dict[str, list[str]] = {m: [] for m in _DRIFT_HELP}
    for metric, name in (("quantshift_importance_rank_correlation", "importance_drift"),
                         ("quantshift_input_drift_share", "input_drift")):
        v = (checks.get(name) or {}).get("value")
        if isinstance(v, (int, float)):
            samples[metric].append(f"{metric}{{{lab}}} {float(v):g}")
    for f in (checks.get("input_drift") or {}).get("features") or []:
        feat = f'{lab},feature="{f["feature"]}"'
        samples["quantshift_input_drift_psi"].append(
            f"quantshift_input_drift_psi{{{feat}}} {f['psi']:g}")
        samples["quantshift_input_drift_ks"].append(
            f"quantshift_input_drift_ks{{{feat}}} {f['ks']:g}")
    out: list[str] = []
    for metric, rows in samples.items():
        if rows:
            out += [f"# HELP {metric} {_DRIFT_HELP[metric]}", f"# TYPE {metric} gauge", *rows]
    return out
