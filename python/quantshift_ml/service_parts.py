"""The service's side parts: the prediction-log writer and the Prometheus metrics.

Both are off the request path's logic: the writer appends to SQLite from its own
thread so a slow disk never delays an answer, and the metrics live in a registry
of their own (no global state, one per service object).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from quantshift_ml import predlog
from quantshift_ml.errors import UsageError
from quantshift_ml.served import Loaded, ModelHolder

log = logging.getLogger("quantshift_ml.service")


class PredictionWriter:
    """Appends every served prediction to the prediction log from one background thread.

    An append (open, insert, commit, close) costs milliseconds, ten to a hundred times
    the inference itself; a queue keeps it off the request path. ``close`` (called
    when the server stops, SIGTERM included) writes everything still queued; only a
    hard kill can lose the few predictions of the last milliseconds. A failed append
    (disk full, locked database) is logged and counted, and never fails a request.
    """

    def __init__(self, root: Path, on_error: Callable[[], None] = lambda: None,
                 maxsize: int = 10_000) -> None:
        self.root = root
        self._on_error = on_error
        self._queue: queue.Queue[predlog.Prediction | None] = queue.Queue(maxsize)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def put(self, p: predlog.Prediction) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="predlog", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(p)
        except queue.Full:
            self._on_error()
            log.error("prediction log queue full: prediction for %s not logged", p.bar_date)

    def _run(self) -> None:
        while True:
            p = self._queue.get()
            try:
                if p is None:
                    return
                predlog.append(self.root, p)
            except (sqlite3.Error, OSError) as exc:
                self._on_error()
                log.error("prediction not logged: %s: %s", type(exc).__name__, exc)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Block until everything queued so far is written (or has failed)."""
        if self._thread is not None:
            self._queue.join()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)


# ---- metrics ----------------------------------------------------------------------
class Metrics:
    """Prometheus metrics in a registry of their own (no global state)."""

    def __init__(self, holder: ModelHolder) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
        except ImportError as exc:
            raise UsageError("the service needs prometheus_client: install quantshift-ml[serve]"
                             ) from exc

        self.registry = CollectorRegistry()
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

    def model_loaded(self, cur: Loaded) -> None:
        self.info.info({"version": str(cur.meta.get("version")),
                        "sha256": str(cur.meta.get("sha256")), "engine": cur.engine})

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


# ---- the service ------------------------------------------------------------------
