"""Market data for the service: bars and the newest feature row, refreshed off the
request path (a slow or failing source never stalls or fails ``/regime``)."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from quantshift_ml import defaults
from quantshift_ml.data.sources import DataSource
from quantshift_ml.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from quantshift_ml.model.filterspec import FilterSpec

HMM_FILTER = defaults.HMM_FILTER

log = logging.getLogger(__name__)


EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def bar_age_days(bar_date: str) -> int:
    """Calendar days from the bar a regime describes to today (UTC): stale data shows."""
    return _age_days(bar_date, int(time.time() // 86400))


@functools.lru_cache(maxsize=64)
def _age_days(bar_date: str, epoch_day: int) -> int:
    """Cached per bar and UTC day: every request asks, the answer changes at midnight."""
    return EPOCH_ORDINAL + epoch_day - dt.date.fromisoformat(bar_date).toordinal()


_now: tuple[int, str] = (-1, "")


def utcnow() -> str:
    """Now (UTC) to the second, ISO 8601; formatted once per second, not per request."""
    global _now
    second = int(time.time())
    cached = _now
    if cached[0] != second:
        cached = _now = (second, dt.datetime.fromtimestamp(second, dt.timezone.utc)
                         .isoformat(timespec="seconds"))
    return cached[1]


@dataclass(frozen=True)
class Snapshot:
    """The newest usable feature row, ready for the model."""

    bar_date: str
    x: np.ndarray
    """float64, shape (1, n_features), columns in the order the model asked for."""
    x32: np.ndarray = field(init=False, repr=False, compare=False)
    """``x`` in float32, what onnxruntime takes (converted once per bar, not per request)."""
    row: tuple[float, ...] = field(init=False, repr=False, compare=False)
    """``x``'s one row as Python floats, for the one-row composition."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "x32", np.ascontiguousarray(self.x, dtype=np.float32)[:1])
        object.__setattr__(self, "row", tuple(float(v) for v in self.x[0]))


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
        # pandas and the feature code are imported with the first bars, after READY=1
        from quantshift_ml.model.features import compute_features, usable

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
            self.refreshed_at, self.error = utcnow(), None
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

    def snapshot(self, features: Sequence[str], fitted: dict[str, Any] | None = None,
                 spec: FilterSpec | None = None) -> Snapshot:
        """The newest row of ``features``; ``fitted`` (the model's HMM) adds ``hmm_filter``,
        ``spec`` (a filter release's) its own P(turbulent), ``FILTER_P``.

        Rows are cached per feature list and HMM until the next refresh, so a
        request costs a dict lookup, not a feature computation.
        """
        key = self._key(features, fitted, spec)
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
                    from quantshift_ml.model.features import with_hmm_filter

                    frame = with_hmm_filter(frame, self._bars, fitted)
                if spec is not None and self._bars is not None:
                    from quantshift_ml.model.filterspec import with_column

                    frame = with_column(spec, self._bars, frame)
                missing = [f for f in features if f not in frame.columns]
                if missing:
                    raise DataError(f"model expects features {missing} the data does not provide")
                row = frame[list(features)].iloc[[-1]]
                snap = Snapshot(bar_date=str(row.index[0].date()),
                                x=np.ascontiguousarray(row.to_numpy(dtype=float)))
                self._rows[key] = snap
            return snap

    @staticmethod
    def _key(features: Sequence[str], fitted: dict[str, Any] | None,
             spec: FilterSpec | None = None) -> tuple[Any, ...]:
        fit_key = None if not fitted else (fitted.get("log_likelihood"), fitted.get("n_obs"))
        return (features if isinstance(features, tuple) else tuple(features), fit_key, spec)

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The cached bars and features (a filter's explanation reads the bars)."""
        with self._lock:
            if self._bars is None or self._features is None:
                raise DataError("no market data loaded yet")
            return self._bars, self._features

    def has_row(self, features: Sequence[str], fitted: dict[str, Any] | None = None,
                spec: FilterSpec | None = None) -> bool:
        """True when ``snapshot`` would answer at once: the row is cached and nobody
        holds the lock (a first load or a row being computed), without waiting for it.

        The async server answers such requests on its event loop and sends the others
        to a thread, so a slow source never holds up the loop. (A refresh that swaps
        bars in between costs one row computation on the loop, once per refresh.)
        """
        return self._key(features, fitted, spec) in self._rows and not self._lock.locked()

    def status(self) -> dict[str, Any]:
        with self._lock:
            as_of = None if self._features is None else str(self._features.index[-1].date())
            return {"source": self.source.name, "as_of": as_of,
                    "refreshed_at": self.refreshed_at, "error": self.error}
