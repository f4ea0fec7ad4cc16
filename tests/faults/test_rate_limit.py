"""Rate-limited data source: a fake ``yfinance.download`` that fails like Yahoo does.

Driven through ``operations.train`` (what the CLI and the Ansible module call)
with ``YFinanceSource(downloader=fake, sleep=recorder)``: retries with
exponential backoff, then a fresh-enough cache, else a clear exit-2 error with
the store untouched. The real backoff is never slept; the recorder keeps it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from quantshift_ml.data import BundledSource, YFinanceSource
from quantshift_ml.errors import DataSourceUnavailable
from quantshift_ml.ops import operations

from .conftest import assert_consistent, models, sha, tree


class YFRateLimitError(Exception):
    """Same name and message as yfinance.exceptions.YFRateLimitError."""

    def __init__(self) -> None:
        super().__init__("Too Many Requests. Rate limited. Try after a while.")


class FakeDownload:
    """Plays back outcomes (exceptions raise, frames return); the last one repeats."""

    def __init__(self, *outcomes: object) -> None:
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


@pytest.fixture(scope="module")
def yf_frame() -> pd.DataFrame:
    """What yfinance.download returns: (field, ticker) MultiIndex columns, Date index."""
    df = BundledSource().load().copy()
    df.insert(4, "Adj Close", df["Close"])
    df.columns = pd.MultiIndex.from_product([df.columns, ["SPY"]])
    return df


def _source(root: Path, fake: FakeDownload, sleeps: list[float]) -> YFinanceSource:
    return YFinanceSource(symbol="SPY", cache_dir=root / "data", downloader=fake,
                          sleep=sleeps.append, retries=4, backoff_seconds=2.0)


def _assert_exponential(sleeps: list[float], n: int) -> None:
    assert len(sleeps) == n, sleeps
    for i, s in enumerate(sleeps):  # 2 s * 2**i, plus at most 10 % jitter
        assert 2.0 * 2**i <= s <= 2.0 * 2**i * 1.1, sleeps


def test_rate_limit_then_timeout_then_success_trains_and_caches(store, yf_frame):
    before = assert_consistent(store)
    sleeps: list[float] = []
    fake = FakeDownload(YFRateLimitError(), TimeoutError("The read operation timed out"),
                        yf_frame)
    out = operations.train(_source(store, fake, sleeps), root=store, promote=True)
    assert fake.calls == 3
    _assert_exponential(sleeps, 2)
    assert out["promoted"] and out["data"]["source"] == "yfinance"
    assert out["data"]["from_cache"] is False
    assert assert_consistent(store)["version"] == out["version"] != before["version"]
    assert (store / "data/SPY.csv").exists()  # the cache for the next outage


def test_persistent_rate_limit_falls_back_to_a_fresh_cache(store, yf_frame):
    YFinanceSource(cache_dir=store / "data", downloader=FakeDownload(yf_frame)).load()
    sleeps: list[float] = []
    fake = FakeDownload(YFRateLimitError())
    out = operations.train(_source(store, fake, sleeps), root=store, promote=True)
    assert fake.calls == 5  # 1 + 4 retries
    _assert_exponential(sleeps, 4)
    assert out["promoted"]
    meta = assert_consistent(store)
    assert meta["data"]["from_cache"] is True  # recorded in the model's metadata


def test_no_cache_is_a_clear_exit_2_error_and_nothing_changes(store):
    before = tree(store)
    sleeps: list[float] = []
    fake = FakeDownload(YFRateLimitError(), TimeoutError("timed out"), YFRateLimitError())
    with pytest.raises(DataSourceUnavailable) as err:
        operations.train(_source(store, fake, sleeps), root=store, promote=True)
    assert err.value.exit_code == 2
    assert "yfinance download of SPY failed after 5 attempt(s)" in str(err.value)
    assert "Rate limited" in str(err.value)
    _assert_exponential(sleeps, 4)
    assert tree(store) == before
    assert not (store / "data/SPY.csv").exists()


def test_stale_cache_is_a_clear_error_and_nothing_changes(store, yf_frame):
    YFinanceSource(cache_dir=store / "data", downloader=FakeDownload(yf_frame)).load()
    old = time.time() - 100 * 3600
    os.utime(store / "data/SPY.csv", (old, old))
    before = tree(store)
    fake = FakeDownload(TimeoutError("timed out"))
    with pytest.raises(DataSourceUnavailable, match=r"100\.0 h old, older than the allowed 72 h"):
        operations.train(_source(store, fake, []), root=store, promote=True)
    assert tree(store) == before


def test_a_non_transient_error_is_not_retried_and_changes_nothing(store):
    pkl = store / "models/regime_classifier.pkl"
    before = sha(pkl), models(store)
    fake, sleeps = FakeDownload(KeyError("SPY: possibly delisted")), []
    with pytest.raises(DataSourceUnavailable, match=r"after 1 attempt\(s\): KeyError"):
        operations.train(_source(store, fake, sleeps), root=store, promote=True)
    assert fake.calls == 1 and sleeps == []
    assert (sha(pkl), models(store)) == before
