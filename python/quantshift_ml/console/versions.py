"""Every model version the console knows, with its metrics, for the charts and the comparison.

Two sources, both written by the playbooks: the controller's artifact directory
(``retrain.yml`` fetches each candidate's signed metadata there) and the hosts'
``quantshift_status`` (active model and backups, from ``status.yml``). A version
known only from a host shows the few numbers ``status`` reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantshift_ml.monitoring.drift import importances
from quantshift_ml.store.layout import VERSION_RE

CLASSES = ("Bull", "Bear", "High Vol", "Low Vol", "Crisis")
# (label, how to read it from a version): the chart's series, in the legend's order
SERIES = (("test accuracy", "test_accuracy"), ("CV accuracy", "cv_accuracy"),
          ("balanced accuracy", "balanced_accuracy"), ("strongest baseline", "baseline"),
          ("gate floor", "floor"))


@dataclass
class Version:
    """One version: where it is, and its signed metadata when the controller has it."""

    version: str
    metadata: dict[str, Any] | None = None
    where: dict[str, str] = field(default_factory=dict)
    sha256: str | None = None
    host_metrics: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str) -> float | None:
        """A number for the charts: metrics, gate figures, or per-class recall ``recall:X``."""
        meta = self.metadata or {}
        metrics, gate = meta.get("metrics") or {}, meta.get("gate") or {}
        if name.startswith("recall:"):
            cls = (metrics.get("per_class") or {}).get(name[len("recall:"):]) or {}
            return _num(cls.get("recall"))
        if name in ("baseline", "floor"):
            return _num(gate.get(name))
        return _num(metrics.get(name, self.host_metrics.get(name)))

    def summary(self) -> dict[str, Any]:
        meta = self.metadata or {}
        gate, data = meta.get("gate") or {}, meta.get("data") or {}
        return {"version": self.version, "where": self.where, "sha256": self.sha256,
                "trained_at": meta.get("trained_at"), "labeler": (meta.get("labeler") or {})
                .get("name"), "family": meta.get("family") or "forest",
                "gate_passed": gate.get("passed"),
                "baseline_name": gate.get("baseline_name"), "window": _window(data),
                **{key: self.metric(key) for _, key in SERIES}}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _window(data: dict[str, Any]) -> str | None:
    if not data.get("window_start"):
        return None
    return f"{data['window_start']}..{data.get('holdout_end') or data.get('last_bar')}"


def _artifact_metadata(artifacts: Path) -> dict[str, dict[str, Any]]:
    """``{version: metadata}`` from ``artifacts/<version>/regime_classifier_<version>.json``."""
    found: dict[str, dict[str, Any]] = {}
    if not artifacts.is_dir():
        return found
    for sub in sorted(artifacts.iterdir()):
        meta = sub / f"regime_classifier_{sub.name}.json"
        if not VERSION_RE.match(sub.name) or sub.is_symlink() or not meta.is_file():
            continue
        try:
            doc = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a half-fetched candidate: shown once the next fetch completes
        if isinstance(doc, dict) and doc.get("version") == sub.name:
            found[sub.name] = doc
    return found


def catalogue(artifacts: Path, hosts: dict[str, dict[str, Any]]) -> list[Version]:
    """Every version, oldest first, with where each one is."""
    versions = {v: Version(v, metadata=m, sha256=m.get("sha256"),
                           where={"controller": "artifact"})
                for v, m in _artifact_metadata(artifacts).items()}
    for host, entry in sorted(hosts.items()):
        status = entry.get("status") or {}
        active = status.get("active") or {}
        for role, item in [("active", active), *[("backup", b) for b in
                                                  status.get("backups") or []]]:
            name = item.get("version")
            if not isinstance(name, str) or not VERSION_RE.match(name):
                continue
            ver = versions.setdefault(name, Version(name, sha256=item.get("sha256")))
            ver.where[host] = role
            ver.host_metrics.update({k: item[k] for k in ("test_accuracy", "cv_accuracy",
                                                          "balanced_accuracy") if k in item})
    return [versions[v] for v in sorted(versions)]


def find(versions: list[Version], name: str) -> Version | None:
    return next((v for v in versions if v.version == name), None)


def _per_class(meta: dict[str, Any]) -> list[dict[str, Any]]:
    per = (meta.get("metrics") or {}).get("per_class") or {}
    return [{"class": c, **(per.get(c) or {})} for c in CLASSES]


def _top_features(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """SHAP importances when the version has them, else the forest's impurity importances."""
    shap = importances(meta)
    if shap:
        ranked = sorted(shap.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        return [{"feature": f, "importance": round(v, 4), "kind": "mean |SHAP|"}
                for f, v in ranked]
    return [{**f, "kind": "impurity"} for f in (meta.get("metrics") or {})
            .get("top_features") or []]


def compare(a: Version, b: Version) -> dict[str, Any]:
    """Side by side: metrics, per-class figures, confusion matrices, features, settings."""
    def side(v: Version) -> dict[str, Any]:
        meta = v.metadata or {}
        return {**v.summary(), "per_class": _per_class(meta),
                "confusion": (meta.get("metrics") or {}).get("confusion_matrix"),
                "top_features": _top_features(meta), "params": meta.get("params"),
                "data": meta.get("data"), "labeler_params": (meta.get("labeler") or {})
                .get("params"), "has_metadata": v.metadata is not None}
    return {"a": side(a), "b": side(b),
            "metrics": [{"label": label, "key": key, "a": a.metric(key), "b": b.metric(key)}
                        for label, key in SERIES]}
