"""``quantshift-ml serve``: the regime service behind the systemd unit.

It loads the active model only after its metadata's signature checks out
against a trusted fleet key, its compiled ONNX form's sha256 matches that
metadata and a one-row smoke prediction works (``served.py``: the service never
unpickles); until then
``/healthz`` answers 503 with the reason, so the deploy loop
(playbooks/tasks/rollout.yml) can tell a host that really runs a new model from
one that merely has the file. SIGHUP reloads the model without dropping
requests: the new one is loaded and checked completely, then swapped in under a
lock; a failed reload keeps serving the previous model and says so.

Engine: always the signed compiled model (onnxruntime), whose parity with
scikit-learn was checked at training. ``/healthz`` names it and the reason.

Endpoints: ``GET /healthz``, ``GET /regime?symbol=SPY``, ``GET /metrics``
(Prometheus exposition). See docs/service.md.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd

from quantshift_ml import predlog
from quantshift_ml.ab import AbConfig, rules_regime
from quantshift_ml.data.sources import DataSource
from quantshift_ml.errors import DataError, QuantshiftError, UsageError
from quantshift_ml.explain import ServedExplainer
from quantshift_ml.features import HMM_FILTER, compute_features, usable, with_hmm_filter
from quantshift_ml.served import Loaded, ModelHolder
from quantshift_ml.service_parts import Metrics, PredictionWriter

log = logging.getLogger(__name__)



def bar_age_days(bar_date: str) -> int:
    """Calendar days from the bar a regime describes to today (UTC): stale data shows."""
    return (dt.datetime.now(dt.timezone.utc).date() - dt.date.fromisoformat(bar_date)).days


def _utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ---- market data ------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """The newest usable feature row, ready for the model."""

    bar_date: str
    x: np.ndarray
    """float64, shape (1, n_features), columns in the order the model asked for."""


class MarketCache:
    """Bars and features from the source, refreshed at most every ``refresh_seconds``.

    Only the first load makes a request wait. After that a stale cache is refreshed
    on a background thread while requests keep getting the bars they had (a slow
    source, e.g. yfinance retrying with backoff, never stalls ``/regime``). A failed
    refresh keeps the previous bars (logged, shown in ``/healthz``) and is retried
    after the next interval, so a flaky source neither fails requests nor gets
    hammered.
    """

    def __init__(self, source: DataSource, refresh_seconds: float = 300.0) -> None:
        self.source = source
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._refreshing = False
        self._features: pd.DataFrame | None = None
        self._bars: pd.DataFrame | None = None
        self._rows: dict[tuple[Any, ...], Snapshot] = {}
        self.refreshed_at: str | None = None
        self.error: str | None = None

    def _load(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        bars = self.source.load()
        feats = compute_features(bars)
        feats = feats[usable(feats)]
        if feats.empty:
            raise DataError(f"{self.source.name}: not enough history to compute features")
        return bars, feats

    def _install(self, loaded: tuple[pd.DataFrame, pd.DataFrame] | None,
                 exc: BaseException | None) -> None:
        """Swap in fresh bars and features, or record why not (call under the lock)."""
        self._refreshing = False
        if loaded is not None:
            self._bars, self._features = loaded
            self._rows = {}
            self.refreshed_at, self.error = _utcnow(), None
            return
        self.error = f"refresh failed: {type(exc).__name__}: {exc}"
        if self._features is not None:
            log.warning("market data %s; serving bars as of %s", self.error,
                        self._features.index[-1].date())

    def _refresh_in_background(self) -> None:
        loaded: tuple[pd.DataFrame, pd.DataFrame] | None = None
        error: BaseException | None = None
        try:
            loaded = self._load()
        except Exception as exc:
            error = exc
        with self._lock:
            self._install(loaded, error)

    def snapshot(self, features: Sequence[str], fitted: dict[str, Any] | None = None
                 ) -> Snapshot:
        """The newest row of ``features``; ``fitted`` (the model's HMM) adds ``hmm_filter``.

        Rows are cached per feature list and HMM until the next refresh, so a
        request costs a dict lookup, not a feature computation.
        """
        fit_key = None if not fitted else (fitted.get("log_likelihood"), fitted.get("n_obs"))
        key = (tuple(features), fit_key)
        with self._lock:
            if self._features is None:
                self._at = time.monotonic()
                try:
                    self._install(self._load(), None)
                except Exception as exc:
                    self._install(None, exc)
                    raise
            elif (not self._refreshing
                  and time.monotonic() - self._at >= self.refresh_seconds):
                self._at, self._refreshing = time.monotonic(), True
                threading.Thread(target=self._refresh_in_background, name="market-refresh",
                                 daemon=True).start()
            assert self._features is not None
            snap = self._rows.get(key)
            if snap is None:
                frame = self._features
                if HMM_FILTER in features and fitted and self._bars is not None:
                    frame = with_hmm_filter(frame, self._bars, fitted)
                missing = [f for f in features if f not in frame.columns]
                if missing:
                    raise DataError(f"model expects features {missing} the data does not provide")
                row = frame[list(features)].iloc[[-1]]
                snap = Snapshot(bar_date=str(row.index[0].date()),
                                x=np.ascontiguousarray(row.to_numpy(dtype=float)))
                self._rows[key] = snap
            return snap

    def status(self) -> dict[str, Any]:
        with self._lock:
            as_of = None if self._features is None else str(self._features.index[-1].date())
            return {"source": self.source.name, "as_of": as_of,
                    "refreshed_at": self.refreshed_at, "error": self.error}


# ---- prediction log ---------------------------------------------------------------
class RegimeService:
    """Wires the holder, the market cache, the metrics and the prediction log."""

    def __init__(self, root: Path, source: DataSource, symbol: str,
                 refresh_seconds: float = 300.0) -> None:
        self.root = Path(root)
        self.holder = ModelHolder(self.root)
        self.market = MarketCache(source, refresh_seconds)
        self.symbol = symbol
        self.metrics = Metrics(self.holder)
        self.predictions = PredictionWriter(self.root, self.metrics.log_errors.inc)
        self.explainer = ServedExplainer(self.holder.store)
        self.ab = AbConfig()

    def health(self) -> tuple[int, dict[str, Any]]:
        cur, err = self.holder.get()
        if cur is None:
            return 503, {"status": "unhealthy", "error": err}
        body = {"status": "ok", "version": cur.meta.get("version"),
                "sha256": cur.meta.get("sha256"), "loaded_at": cur.loaded_at,
                "engine": cur.engine, "engine_reason": cur.engine_reason,
                "market": self.market.status()}
        if err:
            body["last_reload_error"] = err
        return 200, body

    def regime(self, symbol: str, explain: bool = False, client: str = ""
               ) -> tuple[int, dict[str, Any]]:
        cur, err = self.holder.get()
        if cur is None:
            return 503, {"status": "unhealthy", "error": err}
        if symbol.upper() != self.symbol.upper():
            return 404, {"error": f"this service scores {self.symbol}, not {symbol}"}
        snap = self.market.snapshot(cur.features, cur.fitted)
        started = time.perf_counter()
        regime, proba = cur.infer(snap.x)
        elapsed = time.perf_counter() - started
        self.metrics.latency.observe(elapsed)
        version = str(cur.meta.get("version"))
        arm, served, proba_served, rules = self._arm(cur, snap, client, regime, proba)
        self.metrics.arms.labels(arm=arm).inc()
        self.metrics.predictions.labels(regime=served).inc()
        self.predictions.put(predlog.Prediction(
            ts=_utcnow(), symbol=self.symbol, bar_date=snap.bar_date, regime=served,
            probabilities=proba_served, model_version=version, arm=arm, ml_regime=regime,
            rules_regime=rules, client=client))
        body = {"symbol": self.symbol, "regime": served, "probabilities": proba_served,
                "arm": arm,
                "as_of": snap.bar_date, "bar_age_days": bar_age_days(snap.bar_date),
                "model_version": version, "engine": cur.engine,
                "inference_us": round(elapsed * 1e6, 1)}
        if explain:  # only on request: it loads the verified forest and shap once
            body["explanation"] = self.explainer.explain(cur.meta, snap.x, snap.bar_date)
        return 200, body

    def _arm(self, cur: Loaded, snap: Snapshot, client: str, regime: str,
             proba: dict[str, float]) -> tuple[str, str, dict[str, float], str | None]:
        """(arm served, its regime, its probabilities, the rule's regime): ab.py."""
        cols = cur.features
        try:
            rules: str | None = rules_regime(float(snap.x[0, cols.index("atr_ratio")]),
                                             float(snap.x[0, cols.index("sma50_slope")]))
        except ValueError:  # a model without the rule's inputs: the ml arm only
            rules = None
        arm = self.ab.assign(client, self.symbol, snap.bar_date) if rules else "ml"
        if arm == "ml" or rules is None:
            return "ml", regime, proba, rules
        return "rules", rules, {c: float(c == rules) for c in proba}, rules

    def reload(self) -> bool:
        """(Re)load the active model and the A/B settings; requests keep being served."""
        try:
            self.ab = AbConfig.load(self.root)
        except UsageError as exc:  # keep the previous settings, say why
            log.error("A/B settings not reloaded: %s", exc)
        ok = self.holder.load()
        self.metrics.reloads.labels(outcome="ok" if ok else "failed").inc()
        cur, _ = self.holder.get()
        if cur is not None:
            self.metrics.model_loaded(cur)
        return ok

    def warm(self) -> None:
        """Fill the market cache before the first request (errors show up in /healthz)."""
        cur, _ = self.holder.get()
        try:
            if cur is not None:
                self.market.snapshot(cur.features, cur.fitted)
        except Exception as exc:
            log.warning("market data not available yet: %s: %s", type(exc).__name__, exc)


def make_handler(service: RegimeService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "quantshift-regime"

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
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
                    query = parse_qs(url.query)
                    symbol = query.get("symbol", [service.symbol])[0]
                    explain = query.get("explain", ["0"])[0].lower() in ("1", "true", "yes")
                    client = query.get("client", [""])[0][:64]
                    self._json(*service.regime(symbol, explain=explain, client=client))
                elif url.path == "/metrics":
                    self._send(200, service.metrics.render(),
                               "text/plain; version=0.0.4; charset=utf-8")
                else:
                    self._json(404, {"error": f"no such endpoint {url.path}"})
            except QuantshiftError as exc:
                self._json(503, {"error": str(exc)})
            except Exception as exc:
                log.exception("%s failed", url.path)
                self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s - %s", self.address_string(), fmt % args)

    return Handler


def build_server(service: RegimeService, host: str = "127.0.0.1", port: int = 8787
                 ) -> ThreadingHTTPServer:
    """The HTTP server (one thread per request); ``port=0`` picks a free port."""
    server = ThreadingHTTPServer((host, port), make_handler(service))
    server.daemon_threads = True
    return server


def install_signal_handlers(service: RegimeService, stop: Callable[[], None]
                            ) -> Callable[[], None]:
    """SIGHUP reloads the model, SIGTERM calls ``stop`` (``server.shutdown``); returns a
    function that puts the previous handlers back. Call from the main thread.

    The reload runs in its own thread: a signal handler must return quickly, and the
    server keeps answering with the current model until the new one is ready.
    """
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM)}

    def _hup(signum: int, frame: Any) -> None:
        log.info("SIGHUP: reloading the model")
        threading.Thread(target=service.reload, name="reload", daemon=True).start()

    def _stop(signum: int, frame: Any) -> None:
        threading.Thread(target=stop, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGHUP, _hup)
    signal.signal(signal.SIGTERM, _stop)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def serve(root: Path, source: DataSource, *, host: str = "127.0.0.1", port: int = 8787,
          symbol: str = "SPY", refresh_seconds: float = 300.0) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the model."""
    service = RegimeService(root, source, symbol, refresh_seconds)
    service.reload()
    server = build_server(service, host, port)
    restore = install_signal_handlers(service, server.shutdown)
    threading.Thread(target=service.warm, name="warm", daemon=True).start()
    log.info("listening on http://%s:%d (root %s)", host, server.server_address[1], root)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        service.predictions.close()
        restore()
