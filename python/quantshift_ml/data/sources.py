"""Market-data sources behind one interface.

``bundled`` ships real S&P 500 bars inside the package (see bundled/SOURCE.md) so
the default run works offline; ``csv`` reads any Yahoo-format file; ``yfinance``
downloads from Yahoo with retries and exponential backoff, caches the result under
the root's ``data/`` and falls back to a fresh-enough cache when Yahoo is down or
rate-limits us. Every source returns a validated frame (see ``validate_ohlcv``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from quantshift_ml import defaults
from quantshift_ml.data.validation import validate_ohlcv
from quantshift_ml.errors import DataError, DataSourceUnavailable, UsageError
from quantshift_ml.store.files import atomic_write_bytes

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class DataSource(Protocol):
    """Anything that yields validated daily OHLCV bars."""

    name: str

    def load(self) -> pd.DataFrame:
        """Return the full available history, validated (see ``validate_ohlcv``)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-native description recorded in model metadata."""
        ...


def read_yahoo_csv(path: Path | str, *, origin: str | None = None) -> pd.DataFrame:
    """Read and validate a Yahoo-format CSV (plain or gzip)."""
    import pandas as pd  # imported on use: the service starts without pandas

    p = Path(path)
    name = origin or str(p)
    if not p.exists():
        raise DataError(f"{name}: file not found")
    try:
        raw = pd.read_csv(p, dtype=str, keep_default_na=False, na_values=["", "null", "NaN", "nan"])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{name}: not a readable CSV file: {exc}") from exc
    return validate_ohlcv(raw, origin=name)


@dataclass
class BundledSource:
    """Real S&P 500 daily bars 1999-01-04..2018-12-31 shipped in the package."""

    name: str = "bundled"
    symbol: str = "^GSPC"

    def load(self) -> pd.DataFrame:
        ref = resources.files("quantshift_ml.data").joinpath("bundled/sp500.csv.gz")
        with resources.as_file(ref) as path:
            return read_yahoo_csv(path, origin="bundled S&P 500 data")

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "symbol": self.symbol}


@dataclass
class CsvSource:
    """Any Yahoo-format CSV file given with ``--data PATH``."""

    path: Path
    name: str = "csv"
    symbol: str = "CSV"

    def load(self) -> pd.DataFrame:
        return read_yahoo_csv(self.path)

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "symbol": self.symbol, "path": str(self.path)}


def _is_transient(exc: BaseException) -> bool:
    """Rate limits, timeouts and connection resets are worth retrying; others are not."""
    text = f"{type(exc).__name__} {exc}".lower()
    markers = ("ratelimit", "rate limit", "too many requests", "429", "timeout", "timed out",
               "connection", "temporarily", "503", "502")
    return isinstance(exc, (TimeoutError, ConnectionError)) or any(m in text for m in markers)


@dataclass
class YFinanceSource:
    """Daily bars from Yahoo through ``yfinance``, with retries and a local cache.

    ``downloader`` is the boundary to Yahoo; it defaults to ``yfinance.download``
    and is replaced by a fake in tests (there is no route to Yahoo in CI).
    """

    symbol: str = defaults.SYMBOL
    cache_dir: Path | None = None
    retries: int = 4
    backoff_seconds: float = 2.0
    max_cache_age_hours: float = 72.0
    period: str = "max"
    downloader: Callable[..., Any] | None = None
    sleep: Callable[[float], None] = time.sleep
    name: str = "yfinance"
    _used_cache: bool = field(default=False, init=False)

    def _download(self) -> Callable[..., Any]:
        if self.downloader is not None:
            return self.downloader
        try:
            import yfinance  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - depends on the venv
            raise DataSourceUnavailable(
                "the yfinance source needs the 'yfinance' package: "
                "pip install 'quantshift-ml[yfinance]'"
            ) from exc
        return yfinance.download  # type: ignore[no-any-return]

    @property
    def cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return Path(self.cache_dir) / f"{self.symbol.replace('/', '_').upper()}.csv"

    def _fetch(self) -> pd.DataFrame:
        download = self._download()
        attempt = 0
        while True:
            try:
                frame = download(self.symbol, period=self.period, interval="1d",
                                 auto_adjust=False, progress=False, threads=False)
                if frame is None or len(frame) == 0:
                    raise DataError(f"yfinance returned no rows for {self.symbol}")
                return _normalise_yf(frame)
            except DataError:
                raise
            except Exception as exc:
                if not _is_transient(exc) or attempt >= self.retries:
                    raise DataSourceUnavailable(
                        f"yfinance download of {self.symbol} failed after {attempt + 1} "
                        f"attempt(s): {type(exc).__name__}: {exc}"
                    ) from exc
                delay = self.backoff_seconds * (2**attempt) * (1 + random.random() * 0.1)
                log.warning("yfinance %s: %s; retry %d/%d in %.1fs", self.symbol, exc,
                            attempt + 1, self.retries, delay)
                self.sleep(delay)
                attempt += 1

    def load(self) -> pd.DataFrame:
        cache = self.cache_path
        try:
            raw = self._fetch()
        except DataSourceUnavailable as exc:
            if cache is not None and cache.exists():
                age_h = (time.time() - cache.stat().st_mtime) / 3600
                if age_h <= self.max_cache_age_hours:
                    log.warning("using cached %s data (%.1f h old): %s", self.symbol, age_h, exc)
                    self._used_cache = True
                    return read_yahoo_csv(cache, origin=f"cache {cache}")
                raise DataSourceUnavailable(
                    f"{exc}; cache {cache} is {age_h:.1f} h old, older than the allowed "
                    f"{self.max_cache_age_hours:g} h (--max-cache-age-hours)"
                ) from exc
            raise
        frame = validate_ohlcv(raw, origin=f"yfinance {self.symbol}")
        if cache is not None:  # a fresh temp name + rename: never written through a link
            atomic_write_bytes(cache, raw.to_csv(index=False).encode(), mode=0o640)
        return frame

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "symbol": self.symbol, "from_cache": self._used_cache}


def _normalise_yf(frame: pd.DataFrame) -> pd.DataFrame:
    """Turn a yfinance frame (possibly with MultiIndex columns) into Yahoo CSV columns."""
    import pandas as pd  # imported on use: the service starts without pandas

    df = frame.copy()
    if isinstance(df.columns, pd.MultiIndex):
        df.columns = [c[0] for c in df.columns]
    df = df.reset_index()
    first = df.columns[0]
    if first != "Date":
        df = df.rename(columns={first: "Date"})
    df["Date"] = pd.to_datetime(df["Date"]).dt.strftime("%Y-%m-%d")
    return df


def make_source(
    source: str,
    *,
    data: str | None = None,
    symbol: str = defaults.SYMBOL,
    root: Path | None = None,
    max_cache_age_hours: float = 72.0,
) -> DataSource:
    """Build a source from CLI-style options; fails with a usage error when they conflict."""
    if source == "bundled":
        return BundledSource()
    if source == "csv":
        if not data:
            raise UsageError("--source csv needs --data PATH (a Yahoo-format CSV)")
        return CsvSource(Path(data))
    if source == "yfinance":
        cache = (root / "data") if root is not None else None
        return YFinanceSource(symbol=symbol, cache_dir=cache,
                              max_cache_age_hours=max_cache_age_hours)
    raise UsageError(f"unknown source {source!r}: choose bundled, csv or yfinance")
