"""The service object: the verified model, the market cache, the A/B arm, the
prediction log and the metrics, wired once and shared by every request thread."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from quantshift_ml.data.sources import DataSource
from quantshift_ml.errors import UsageError
from quantshift_ml.insight.ab import AbConfig, rules_regime
from quantshift_ml.insight.explain import ServedExplainer
from quantshift_ml.serving import predlog
from quantshift_ml.serving.served import Loaded, LoadedFilter, ModelHolder
from quantshift_ml.serving.service.market import MarketCache, Snapshot, bar_age_days, utcnow
from quantshift_ml.serving.service.metrics import Metrics
from quantshift_ml.serving.service.shadows import ShadowLogger
from quantshift_ml.serving.service.writer import PredictionWriter

log = logging.getLogger(__name__)


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
        self.shadows = ShadowLogger(self.root, self.market, self.metrics.log_errors.inc)
        self.explainer = ServedExplainer(self.holder.store)
        self.ab = AbConfig()

    def health(self) -> tuple[int, dict[str, Any]]:
        cur, err = self.holder.get()
        if cur is None:
            return 503, {"status": "unhealthy", "error": err}
        body = {"status": "ok", "version": cur.meta.get("version"),
                "sha256": cur.meta.get("sha256"), "family": cur.family,
                "loaded_at": cur.loaded_at,
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
        snap = self.market.snapshot(cur.feature_names, cur.fitted, cur.spec)
        started = time.perf_counter()
        regime, proba = cur.infer_row(snap.x32, snap.row)
        elapsed = time.perf_counter() - started
        self.metrics.latency.observe(elapsed)
        version = cur.version
        arm, served, proba_served, rules = self._arm(cur, snap, client, regime, proba)
        self.metrics.served(arm, served)
        self.predictions.put(predlog.Prediction(
            ts=utcnow(), symbol=self.symbol, bar_date=snap.bar_date, regime=served,
            probabilities=proba_served, model_version=version, arm=arm, ml_regime=regime,
            rules_regime=rules, client=client))
        if cur.meta.get("shadows"):  # the other families' answers, logged off this path
            self.shadows.put(cur.meta, self.symbol, snap.bar_date, regime, version)
        body = {"symbol": self.symbol, "regime": served, "probabilities": proba_served,
                "arm": arm,
                "as_of": snap.bar_date, "bar_age_days": bar_age_days(snap.bar_date),
                "model_version": version, "family": cur.family, "engine": cur.engine,
                "inference_us": round(elapsed * 1e6, 1)}
        if explain:  # only on request: it loads the verified forest and shap once
            body["explanation"] = self._explain(cur, snap)
        return 200, body

    def _explain(self, cur: Loaded | LoadedFilter, snap: Snapshot) -> dict[str, Any]:
        """A forest's SHAP values (verified pickle, once per version), or a filter's exact
        log-odds decomposition from its signed spec and the cached bars."""
        if isinstance(cur, Loaded):
            return self.explainer.explain(cur.meta, snap.x, snap.bar_date)
        from quantshift_ml.model.filterspec import explain

        bars, feats = self.market.frames()
        return explain(cur.spec, bars.loc[:snap.bar_date], feats.loc[:snap.bar_date])

    def regime_is_quick(self) -> bool:
        """True when ``regime`` (without explanation) would not wait on a lock or the
        data source: no model (503 at once), or its feature row already cached."""
        cur, _ = self.holder.get()
        return cur is None or self.market.has_row(cur.feature_names, cur.fitted, cur.spec)

    def _arm(self, cur: Loaded | LoadedFilter, snap: Snapshot, client: str, regime: str,
             proba: dict[str, float]) -> tuple[str, str, dict[str, float], str | None]:
        """(arm served, its regime, its probabilities, the rule's regime): ab.py."""
        cols = cur.feature_names
        try:
            rules: str | None = rules_regime(snap.row[cols.index("atr_ratio")],
                                             snap.row[cols.index("sma50_slope")])
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
                self.market.snapshot(cur.features, cur.fitted, cur.spec)
        except Exception as exc:
            log.warning("market data not available yet: %s: %s", type(exc).__name__, exc)

    def close(self) -> None:
        """Write what the prediction log and the shadow logger still hold, then stop them."""
        self.shadows.close()
        self.predictions.close()
