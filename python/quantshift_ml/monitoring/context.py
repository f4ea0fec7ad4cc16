"""One monitor run's reads, each done once and handed to every check.

Before this, one run loaded the market data up to three times (live accuracy,
live outcomes, input drift and the A/B test each called ``source.load()``),
computed the realised labels twice (``live_accuracy`` and ``ab_test``), read the
prediction log three times and verified every backup three times (the
``backups`` check, ``importance_drift`` and ``ab_test``) and the active model
twice. A ``RunContext`` reads each of them on first use and keeps it for the
rest of the run; ``reads`` counts what was actually read, and the monitor's
report carries it, so a test (and an operator) can see that each was read once.

A context lives for one run only: it holds no lock and re-reads nothing, so a
file changed during the run is seen by the next run, as before.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from quantshift_ml.data.sources import DataSource
from quantshift_ml.errors import QuantshiftError
from quantshift_ml.insight.ab import AbConfig
from quantshift_ml.model.features import compute_features
from quantshift_ml.model.labels import make_labeler
from quantshift_ml.serving import predlog
from quantshift_ml.store import ModelStore
from quantshift_ml.store.artifact import Artifact
from quantshift_ml.store.backups import BackupCheck


def realised_labels(labeler: dict[str, Any], bars: pd.DataFrame) -> dict[str, str | None]:
    """Every bar date of ``bars`` -> its label by the model's labeler, or None (unsettled)."""
    lab = make_labeler(labeler.get("name", "rules"), **{
        k: v for k, v in (labeler.get("params") or {}).items() if k != "name"})
    labels = lab.label(bars, compute_features(bars)).reindex(bars.index)
    dates = pd.DatetimeIndex(bars.index).strftime("%Y-%m-%d")
    return {d: (str(v) if isinstance(v, str) else None)
            for d, v in zip(dates, labels.to_numpy(), strict=True)}


class RunContext:
    """The store, the data source and the symbol of one run, and what was read from them."""

    def __init__(self, root: Path | str, source: DataSource | None = None,
                 symbol: str | None = None, store: ModelStore | None = None) -> None:
        self.root = Path(root)
        self.source = source
        self.symbol = symbol
        self.store = store or ModelStore(self.root)
        self.reads: Counter[str] = Counter()
        self._cache: dict[str, Any] = {}

    def _once(self, key: str, counter: str, read: Any, count: Any = lambda _: 1) -> Any:
        """``read()`` on first use, kept for the run; ``count`` of it added to ``reads``."""
        if key not in self._cache:
            self._cache[key] = read()
            self.reads[counter] += count(self._cache[key])
        return self._cache[key]

    def bars(self) -> pd.DataFrame:
        """The source's bars, loaded once (a copy each time: no check can change another's)."""
        if self.source is None:
            raise QuantshiftError("this monitor run has no market data source")
        source = self.source
        return self._once("bars", "market_data", source.load).copy()

    def realised(self, labeler: dict[str, Any]) -> dict[str, str | None]:
        """The labeler's settled label of every bar date, computed once per labeler."""
        key = "realised:" + json.dumps(labeler, sort_keys=True, default=str)
        return dict(self._once(key, "realised_labels",
                               lambda: realised_labels(labeler, self.bars())))

    def samples(self) -> list[predlog.Sample]:
        """The prediction log's samples (one per symbol, bar, version), read once."""
        return list(self._once("samples", "prediction_log", lambda: predlog.samples(self.root)))

    def arm_samples(self) -> list[predlog.Sample]:
        """The prediction log's per-arm samples, read once."""
        return list(self._once("arm_samples", "prediction_log_arms",
                               lambda: predlog.arm_samples(self.root)))

    def active(self) -> Artifact:
        """The active model verified (signature and sha256s), once; raises IntegrityError."""
        store = self.store
        return self._once("active", "active_verified",  # type: ignore[no-any-return]
                          lambda: store.verify(store.layout.active_pkl))

    def backups(self) -> list[BackupCheck]:
        """Every backup verified as a rollback would, once per run."""
        return list(self._once("backups", "backups_verified", self.store.checked_backups, len))

    def trusted_backups(self) -> list[Artifact]:
        """The intact ones of ``backups``, oldest first (``ModelStore.trusted_backups``)."""
        return [c.artifact for c in self.backups() if c.artifact is not None]

    def ab_config(self) -> AbConfig:
        """The host's A/B settings (``etc/ab.json``), read once; raises UsageError."""
        return self._once("ab", "ab_config",  # type: ignore[no-any-return]
                          lambda: AbConfig.load(self.root))

    def forward_outcomes(self, config: Any) -> pd.DataFrame:
        """``outcomes.forward_outcomes`` of the bars' closes for ``config``, once per config."""
        from quantshift_ml.outcomes import forward_outcomes

        return self._once(f"outcomes:{config!r}", "forward_outcomes",  # type: ignore[no-any-return]
                          lambda: forward_outcomes(self.bars()["Close"], config))
