"""Bad market data: every variant is refused with exit 2 and the reason, nothing written.

Each CSV is the last ~4 years of the bundled S&P 500 bars written in Yahoo
layout, with one defect. ``quantshift-ml train --promote`` is run through the
CLI's ``main`` (the same function the console script calls).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from quantshift_ml.cli import dispatch as cli
from quantshift_ml.data import BundledSource

from .conftest import tree

ROW = 500  # 0-based data row that gets the defect; messages count rows from 1


@pytest.fixture(scope="module")
def good() -> pd.DataFrame:
    bars = BundledSource().load().iloc[-1000:].copy()
    bars.insert(4, "Adj Close", bars["Close"])
    out = bars.reset_index()
    out["Date"] = out["Date"].dt.strftime("%Y-%m-%d")
    return out.astype(str)


def _set(col: str, value: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[ROW, col] = value
        return df
    return edit


def _duplicate(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[ROW, "Date"] = df.loc[ROW - 1, "Date"]
    return df


def _swap(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[[ROW, ROW + 1]] = df.loc[[ROW + 1, ROW]].to_numpy()
    return df


VARIANTS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str]] = {
    "NaN close": (_set("Close", "NaN"), f"row {ROW + 1} (.*): Close is NaN/empty"),
    "empty volume": (_set("Volume", ""), f"row {ROW + 1} (.*): Volume is NaN/empty"),
    "duplicate date": (_duplicate, f"row {ROW + 1}: duplicate date"),
    "unsorted dates": (_swap, f"row {ROW + 2}: dates not increasing .*sort the file by Date"),
    "too few rows": (lambda df: df.iloc[-120:], r"120 rows \(.*\) but \d+ are needed"),
    "missing column": (lambda df: df.drop(columns=["Volume"]),
                       "missing required column.*Volume"),
    "non-numeric close": (_set("Close", "12,5x"), f"row {ROW + 1} (.*): non-numeric Close"),
    "zero price": (_set("Low", "0"), f"row {ROW + 1} (.*): non-positive Low 0.0"),
    "negative price": (_set("Open", "-3.5"), f"row {ROW + 1} (.*): non-positive Open -3.5"),
    "unparseable date": (_set("Date", "2017-13-45"), f"row {ROW + 1}: unparseable date"),
    "infinite close": (_set("Close", "inf"),
                       f"row {ROW + 1} (.*): Close 'inf' is not a finite value"),
    "infinite high": (_set("High", "-inf"),
                      f"row {ROW + 1} (.*): High '-inf' is not a finite value"),
    "absurd volume": (_set("Volume", "1e300"),
                      f"row {ROW + 1} (.*): Volume '1e300' is not a finite value below 1e\\+15"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bad_data_exits_2_with_the_reason_and_changes_nothing(
        variant: str, good: pd.DataFrame, store: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    edit, reason = VARIANTS[variant]
    csv = tmp_path / "bad.csv"
    edit(good.copy()).to_csv(csv, index=False)
    before = tree(store)
    before_lock = (store / "models/.quantshift.lock").read_bytes()
    before_paths = sorted(store.rglob("*"))

    code = cli.main(["train", "--root", str(store), "--promote", "--source", "csv",
                     "--data", str(csv)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("quantshift-ml: error: "), err
    assert "Traceback" not in err
    assert re.search(reason, err), err
    # nothing changed and nothing new anywhere under the root (lock file included)
    assert tree(store) == before
    assert (store / "models/.quantshift.lock").read_bytes() == before_lock
    assert sorted(store.rglob("*")) == before_paths
