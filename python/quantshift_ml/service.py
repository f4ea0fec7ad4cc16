"""``quantshift-ml serve``: the regime service behind the systemd unit.

It loads the active model only after its sha256 matches the metadata and a
one-row smoke prediction works; until then ``/healthz`` answers 503 with the
reason, so the deploy loop (playbooks/tasks/rollout.yml) can tell a host that
really runs a new model from one that merely has the file. SIGHUP reloads the
model without dropping requests: the new one is loaded completely, then swapped
in under a lock; a failed reload keeps serving the previous model and says so.

Endpoints: ``GET /healthz``, ``GET /regime?symbol=SPY``, ``GET /metrics``
(Prometheus exposition).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd

from quantshift_ml import predlog
from quantshift_ml.data.sources import DataSource
from quantshift_ml.errors import QuantshiftError
from quantshift_ml.features import compute_features, usable
from quantshift_ml.store import ModelStore
from quantshift_ml.training.model import predict, predict_proba

log = logging.getLogger(__name__)


def _utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Loaded:
    """A verified, smoke-tested model ready to serve."""

    bundle: dict[str, Any]
    meta: dict[str, Any]
    loaded_at: str


class ModelHolder:
    """The model currently served, swapped atomically on reload."""

    def __init__(self, root: Path) -> None:
        self.store = ModelStore(root)
        self._lock = threading.Lock()
        self.current: Loaded | None = None
        self.error: str | None = "not loaded yet"

    def load(self) -> bool:
        """Load the active model; keep the previous one when that fails."""
        try:
            bundle, art = self.store.load_model(self.store.layout.active_pkl)
            _smoke_test(bundle)
        except (QuantshiftError, OSError, Exception) as exc:  # any unpickling failure too
            reason = f"cannot load the active model: {type(exc).__name__}: {exc}"
            log.error("%s", reason)
            with self._lock:
                self.error = reason
            return False
        loaded = Loaded(bundle=bundle, meta=art.meta, loaded_at=_utcnow())
        with self._lock:
            self.current, self.error = loaded, None
        log.info("serving model %s (sha256 %s)", art.version, art.sha256[:12])
        return True

    def get(self) -> tuple[Loaded | None, str | None]:
        with self._lock:
            return self.current, self.error


def _smoke_test(bundle: Any) -> None:
    """A loaded object must be a bundle that predicts one row of its own features."""
    if not isinstance(bundle, dict) or "model" not in bundle or "features" not in bundle:
        raise ValueError("artifact is not a quantshift model bundle")
    row = pd.DataFrame([[0.0] * len(bundle["features"])], columns=bundle["features"])
    predict(bundle, row)


class MarketCache:
    """Features of the newest bars, refreshed at most every ``refresh_seconds``."""

    def __init__(self, source: DataSource, refresh_seconds: float = 300.0) -> None:
        self.source = source
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._at = 0.0
        self._features: pd.DataFrame | None = None

    def latest(self) -> pd.DataFrame:
        with self._lock:
            if self._features is None or time.monotonic() - self._at > self.refresh_seconds:
                feats = compute_features(self.source.load())
                self._features = feats[usable(feats)]
                self._at = time.monotonic()
            return self._features.iloc[[-1]]


class Metrics:
    """Prometheus metrics in a registry of their own (no global state)."""

    def __init__(self, holder: ModelHolder) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "quantshift_prediction_latency_seconds", "Time to compute one regime",
            buckets=(5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.5),
            registry=self.registry)
        self.predictions = Counter("quantshift_predictions", "Regimes served",
                                   ["regime"], registry=self.registry)
        self.info = Info("quantshift_model", "Model being served", registry=self.registry)
        age = Gauge("quantshift_model_age_seconds", "Age of the served model",
                    registry=self.registry)
        acc = Gauge("quantshift_model_holdout_accuracy", "Holdout accuracy at training",
                    registry=self.registry)
        healthy = Gauge("quantshift_model_loaded", "1 when a verified model is served",
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
        healthy.set_function(lambda: 1.0 if holder.get()[0] is not None else 0.0)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class RegimeService:
    """Wires the holder, the market cache, the metrics and the prediction log."""

    def __init__(self, root: Path, source: DataSource, symbol: str,
                 refresh_seconds: float = 300.0) -> None:
        self.root = Path(root)
        self.holder = ModelHolder(self.root)
        self.market = MarketCache(source, refresh_seconds)
        self.symbol = symbol
        self.metrics = Metrics(self.holder)

    def health(self) -> tuple[int, dict[str, Any]]:
        cur, err = self.holder.get()
        if cur is None:
            return 503, {"status": "unhealthy", "error": err}
        body = {"status": "ok", "version": cur.meta.get("version"),
                "sha256": cur.meta.get("sha256"), "loaded_at": cur.loaded_at,
                "engine": "sklearn"}
        if err:
            body["last_reload_error"] = err
        return 200, body

    def regime(self, symbol: str) -> tuple[int, dict[str, Any]]:
        cur, err = self.holder.get()
        if cur is None:
            return 503, {"status": "unhealthy", "error": err}
        if symbol.upper() != self.symbol.upper():
            return 404, {"error": f"this service scores {self.symbol}, not {symbol}"}
        row = self.market.latest()
        started = time.perf_counter()
        regime = str(predict(cur.bundle, row)[0])
        proba = predict_proba(cur.bundle, row)[0]
        elapsed = time.perf_counter() - started
        self.metrics.latency.observe(elapsed)
        self.metrics.predictions.labels(regime=regime).inc()
        bar = str(row.index[0].date())
        version = str(cur.meta.get("version"))
        predlog.append(self.root, predlog.Prediction(
            ts=_utcnow(), symbol=self.symbol, bar_date=bar, regime=regime,
            probabilities=proba, model_version=version))
        return 200, {"symbol": self.symbol, "regime": regime, "probabilities": proba,
                     "as_of": bar, "model_version": version,
                     "inference_us": round(elapsed * 1e6, 1)}

    def reload(self) -> bool:
        ok = self.holder.load()
        cur, _ = self.holder.get()
        if cur is not None:
            self.metrics.info.info({"version": str(cur.meta.get("version")),
                                    "sha256": str(cur.meta.get("sha256"))})
        return ok


def make_handler(service: RegimeService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "quantshift-regime"

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: dict[str, Any]) -> None:
            self._send(status, (json.dumps(obj) + "\n").encode(), "application/json")

        def do_GET(self) -> None:
            url = urlparse(self.path)
            try:
                if url.path == "/healthz":
                    self._json(*service.health())
                elif url.path == "/regime":
                    symbol = parse_qs(url.query).get("symbol", [service.symbol])[0]
                    self._json(*service.regime(symbol))
                elif url.path == "/metrics":
                    self._send(200, service.metrics.render(),
                               "text/plain; version=0.0.4; charset=utf-8")
                else:
                    self._json(404, {"error": f"no such endpoint {url.path}"})
            except QuantshiftError as exc:
                self._json(503, {"error": str(exc)})

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s - %s", self.address_string(), fmt % args)

    return Handler


def serve(root: Path, source: DataSource, *, host: str = "127.0.0.1", port: int = 8787,
          symbol: str = "SPY", refresh_seconds: float = 300.0) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the model."""
    service = RegimeService(root, source, symbol, refresh_seconds)
    service.reload()
    server = ThreadingHTTPServer((host, port), make_handler(service))
    server.daemon_threads = True

    def _hup(signum: int, frame: Any) -> None:
        threading.Thread(target=service.reload, name="reload", daemon=True).start()

    def _stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGHUP, _hup)
    signal.signal(signal.SIGTERM, _stop)
    log.info("listening on http://%s:%d (root %s)", host, server.server_address[1], root)
    try:
        server.serve_forever()
    finally:
        server.server_close()
