"""The real yfinance code path, with a fake at the yfinance.download boundary."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from quantshift_ml.data.sources import YFinanceSource
from quantshift_ml.errors import DataError, DataSourceUnavailable


class YFRateLimitError(Exception):
    """Stands in for yfinance.exceptions.YFRateLimitError (same name, same message)."""


def _yf_frame(bars: pd.DataFrame) -> pd.DataFrame:
    """What yfinance.download returns: MultiIndex columns (field, ticker), Date index."""
    df = bars.iloc[-600:].copy()
    df.insert(4, "Adj Close", df["Close"])
    df.columns = pd.MultiIndex.from_product([df.columns, ["SPY"]])
    return df


class FakeDownload:
    def __init__(self, outcomes: list[object]) -> None:
        self.outcomes = outcomes
        self.calls = 0

    def __call__(self, symbol: str, **kwargs: object) -> pd.DataFrame:
        assert symbol == "SPY" and kwargs["interval"] == "1d"
        out = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if isinstance(out, BaseException):
            raise out
        assert isinstance(out, pd.DataFrame)
        return out


def test_retries_with_exponential_backoff_then_caches(bars: pd.DataFrame, tmp_path: Path) -> None:
    sleeps: list[float] = []
    fake = FakeDownload([YFRateLimitError("Too Many Requests. Rate limited."),
                         TimeoutError("read timed out"), _yf_frame(bars)])
    src = YFinanceSource(cache_dir=tmp_path, downloader=fake, sleep=sleeps.append,
                         backoff_seconds=1.0)
    frame = src.load()
    assert fake.calls == 3
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] * 1.8  # exponential
    assert len(frame) == 600
    assert (tmp_path / "SPY.csv").exists()


def test_falls_back_to_fresh_cache(bars: pd.DataFrame, tmp_path: Path) -> None:
    YFinanceSource(cache_dir=tmp_path, downloader=FakeDownload([_yf_frame(bars)])).load()
    down = FakeDownload([YFRateLimitError("Rate limited. Try after a while.")])
    src = YFinanceSource(cache_dir=tmp_path, downloader=down, sleep=lambda s: None, retries=2)
    frame = src.load()
    assert down.calls == 3 and len(frame) == 600
    assert src.describe()["from_cache"] is True


def test_stale_cache_is_a_clear_error(bars: pd.DataFrame, tmp_path: Path) -> None:
    YFinanceSource(cache_dir=tmp_path, downloader=FakeDownload([_yf_frame(bars)])).load()
    old = time.time() - 100 * 3600
    os.utime(tmp_path / "SPY.csv", (old, old))
    src = YFinanceSource(cache_dir=tmp_path, sleep=lambda s: None, retries=1,
                         downloader=FakeDownload([TimeoutError("timed out")]))
    with pytest.raises(DataSourceUnavailable, match="older than the allowed 72 h"):
        src.load()


def test_non_transient_errors_are_not_retried(tmp_path: Path) -> None:
    fake = FakeDownload([KeyError("bad symbol")])
    src = YFinanceSource(cache_dir=tmp_path, downloader=fake, sleep=lambda s: None)
    with pytest.raises(DataSourceUnavailable, match="after 1 attempt"):
        src.load()
    assert fake.calls == 1


def test_empty_download_is_a_data_error(tmp_path: Path) -> None:
    src = YFinanceSource(cache_dir=tmp_path, downloader=FakeDownload([pd.DataFrame()]))
    with pytest.raises(DataError, match="no rows"):
        src.load()
