"""Data sources and validation: every malformed file is refused with the row named."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from quantshift_ml.data import BundledSource, CsvSource, validate_ohlcv
from quantshift_ml.errors import DataError


def test_bundled_is_real_sp500(bars: pd.DataFrame) -> None:
    assert len(bars) == 5031
    assert str(bars.index[0].date()) == "1999-01-04"
    assert str(bars.index[-1].date()) == "2018-12-31"
    assert BundledSource().describe()["source"] == "bundled"


def test_csv_source_reads_yahoo_layout(yahoo_csv: Path, bars: pd.DataFrame) -> None:
    frame = CsvSource(yahoo_csv).load()
    assert len(frame) == 1000
    assert frame["Close"].iloc[-1] == pytest.approx(bars["Close"].iloc[-1])


def _raw(yahoo_csv: Path) -> pd.DataFrame:
    return pd.read_csv(yahoo_csv, dtype=str)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.assign(Close=d["Close"].where(d.index != 10, None)), "row 11"),
        (lambda d: d.drop(columns=["Volume"]), "missing required column(s) Volume"),
        (lambda d: d.assign(Open=d["Open"].where(d.index != 5, "abc")), "non-numeric Open"),
        (lambda d: d.assign(Low=d["Low"].where(d.index != 7, "-1")), "non-positive Low"),
        (lambda d: pd.concat([d.iloc[:20], d.iloc[19:20], d.iloc[20:]]), "duplicate date"),
        (lambda d: pd.concat([d.iloc[:20], d.iloc[21:22], d.iloc[20:21], d.iloc[22:]]),
         "dates not increasing"),
        (lambda d: d.assign(Date=d["Date"].where(d.index != 3, "yesterday")), "unparseable date"),
    ],
)
def test_validation_names_problem_and_row(yahoo_csv: Path, mutate, message: str) -> None:
    raw = mutate(_raw(yahoo_csv)).reset_index(drop=True)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_ohlcv(raw, origin="test.csv")


def test_empty_and_garbage_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="not a readable CSV"):
        CsvSource(empty).load()
    with pytest.raises(DataError, match="file not found"):
        CsvSource(tmp_path / "nope.csv").load()
