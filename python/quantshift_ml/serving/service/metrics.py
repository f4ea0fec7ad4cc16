"""The service's Prometheus metrics, in a registry of their own (no global state,
one per service object), served at ``/metrics``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from quantshift_ml.errors import UsageError
from quantshift_ml.serving.served import Loaded, LoadedFilter, ModelHolder


class Metrics:
    """Prometheus metrics in a registry of their own (no global state)."""

    def __init__(self, holder: ModelHolder) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
        except ImportError as exc:
            raise UsageError("the service needs prometheus_client: install quantshift-ml[serve]"
                             ) from exc

        self.registry = CollectorRegistry()
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.latency = Histogram(
            "quantshift_prediction_latency_seconds",
            "Model inference time of one regime (features to probabilities)",
            buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
                     5e-2, 0.1, 0.5),
            registry=self.registry)
        self.predictions = Counter("quantshift_predictions", "Regimes served, by regime",
                                   ["regime"], registry=self.registry)
        self.arms = Counter("quantshift_ab_served", "Answers served, by A/B arm", ["arm"],
                            registry=self.registry)
        self.reloads = Counter("quantshift_model_reloads", "Model (re)loads, by outcome",
                               ["outcome"], registry=self.registry)
        self.log_errors = Counter("quantshift_prediction_log_errors",
                                  "Predictions served but not written to the prediction log",
                                  registry=self.registry)
        self.info = Info("quantshift_model", "Model being served", registry=self.registry)
        age = Gauge("quantshift_model_age_seconds", "Seconds since the served model was trained",
                    registry=self.registry)
        acc = Gauge("quantshift_model_holdout_accuracy",
                    "Holdout accuracy of the served model at training", registry=self.registry)
        loaded = Gauge("quantshift_model_loaded", "1 when a verified model is served",
                       registry=self.registry)

        def _age() -> float:
            cur, _ = holder.get()
            if cur is None or not cur.meta.get("trained_at"):
                return float("nan")
            trained = dt.datetime.fromisoformat(str(cur.meta["trained_at"]))
            return (dt.datetime.now(dt.timezone.utc) - trained).total_seconds()

        def _acc() -> float:
            cur, _ = holder.get()
            value = (cur.meta.get("metrics") or {}).get("test_accuracy") if cur else None
            return float(value) if value is not None else float("nan")

        age.set_function(_age)
        acc.set_function(_acc)
        loaded.set_function(lambda: 1.0 if holder.get()[0] is not None else 0.0)

    def served(self, arm: str, regime: str) -> None:
        """Count one answer by arm and by regime, through cached labelled children
        (``.labels()`` costs a lock and a tuple per call: issue 28)."""
        child = self._children.get((arm, regime))
        if child is None:
            child = self._children[(arm, regime)] = (self.arms.labels(arm=arm),
                                                     self.predictions.labels(regime=regime))
        child[0].inc()
        child[1].inc()

    def model_loaded(self, cur: Loaded | LoadedFilter) -> None:
        self.info.info({"version": str(cur.meta.get("version")),
                        "sha256": str(cur.meta.get("sha256")), "engine": cur.engine,
                        "family": cur.family})

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))
