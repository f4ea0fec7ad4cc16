"""Validation of OHLCV frames before anything is computed or trained.

Every check names the problem and the first offending row (1-based data row,
as a spreadsheet would show it after the header) or date, because the person
reading the error has to open the file and fix it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quantshift_ml.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

REQUIRED_COLUMNS: tuple[str, ...] = ("Date", "Open", "High", "Low", "Close", "Volume")
PRICE_COLUMNS: tuple[str, ...] = ("Open", "High", "Low", "Close")


MAX_VALUE = 1e15
"""Largest price or volume accepted (absurd beyond: a unit or export error)."""


def _first(mask: pd.Series) -> int:
    """Position of the first True in a boolean Series."""
    return int(mask.to_numpy().nonzero()[0][0])


def _numeric(raw_col: pd.Series, col: str, dates: pd.Series, origin: str) -> np.ndarray:
    """One column as floats: refuse non-numeric, NaN/empty, infinite and absurd values."""
    import numpy as np  # imported on use, like pandas
    import pandas as pd  # imported on use: the service starts without pandas

    values = pd.to_numeric(raw_col, errors="coerce")
    bad = values.isna() & raw_col.notna()
    if bad.any():
        pos = _first(bad)
        raise DataError(
            f"{origin}: row {pos + 1} ({dates.iloc[pos].date()}): "
            f"non-numeric {col} {raw_col.iloc[pos]!r}"
        )
    if values.isna().any():
        pos = _first(values.isna())
        raise DataError(
            f"{origin}: row {pos + 1} ({dates.iloc[pos].date()}): {col} is NaN/empty"
        )
    # inf parses as a number but breaks every ratio after it, and a value past
    # 1e15 is a unit or export error, not a price or a day's volume
    absurd = ~np.isfinite(values) | (values.abs() > MAX_VALUE)
    if absurd.any():
        pos = _first(absurd)
        raise DataError(
            f"{origin}: row {pos + 1} ({dates.iloc[pos].date()}): {col} "
            f"{raw_col.iloc[pos]!r} is not a finite value below {MAX_VALUE:g}"
        )
    return values.to_numpy(dtype=float)


def validate_ohlcv(raw: pd.DataFrame, *, origin: str = "data") -> pd.DataFrame:
    """Check a raw Yahoo-format frame and return it indexed by date.

    Args:
        raw: one row per bar, columns at least ``REQUIRED_COLUMNS`` (strings or
            numbers, as read from a CSV); ``Adj Close`` is optional.
        origin: a name for the data (file path, symbol) used in messages.

    Returns:
        A float frame indexed by a ``DatetimeIndex`` named ``Date`` with columns
        Open, High, Low, Close, Volume, sorted as given (validated increasing).

    Raises:
        DataError: on the first problem found, naming the row or date.
    """
    import pandas as pd  # imported on use: the service starts without pandas

    frame = _columns(raw, origin)
    dates = _dates(frame, origin)
    out = pd.DataFrame(index=pd.DatetimeIndex(dates.to_numpy(), name="Date"))
    for col in (*PRICE_COLUMNS, "Volume"):
        out[col] = _numeric(frame[col], col, dates, origin)
    _check_values(out, origin)
    return out


def _columns(raw: pd.DataFrame, origin: str) -> pd.DataFrame:
    """The frame with its column names stripped; refuse an empty one or missing columns."""
    if raw.empty:
        raise DataError(f"{origin}: no rows")
    cols = {str(c).strip(): c for c in raw.columns}
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise DataError(
            f"{origin}: missing required column(s) {', '.join(missing)}; "
            f"expected Yahoo layout {', '.join(REQUIRED_COLUMNS)} (found {', '.join(cols)})"
        )
    return raw.rename(columns={v: k for k, v in cols.items()})


def _dates(frame: pd.DataFrame, origin: str) -> pd.Series:
    """The Date column parsed (naive); refuse unparseable, duplicate or unsorted dates."""
    import pandas as pd  # imported on use: the service starts without pandas

    dates = pd.to_datetime(frame["Date"], errors="coerce", utc=False)
    if dates.isna().any():
        pos = _first(dates.isna())
        raise DataError(f"{origin}: row {pos + 1}: unparseable date {frame['Date'].iloc[pos]!r}")
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_localize(None)
    dup = dates.duplicated()
    if dup.any():
        pos = _first(dup)
        raise DataError(f"{origin}: row {pos + 1}: duplicate date {dates.iloc[pos].date()}")
    back = dates.diff() <= pd.Timedelta(0)
    if back.any():
        pos = _first(back)
        raise DataError(
            f"{origin}: row {pos + 1}: dates not increasing "
            f"({dates.iloc[pos].date()} after {dates.iloc[pos - 1].date()}); sort the file by Date"
        )
    return dates


def _check_values(out: pd.DataFrame, origin: str) -> None:
    """Refuse non-positive prices, negative volume and a High/Low that does not bracket."""
    for col in PRICE_COLUMNS:
        bad = out[col] <= 0
        if bad.any():
            pos = _first(bad)
            raise DataError(
                f"{origin}: row {pos + 1} ({out.index[pos].date()}): non-positive {col} "
                f"{out[col].iloc[pos]}"
            )
    neg = out["Volume"] < 0
    if neg.any():
        pos = _first(neg)
        raise DataError(f"{origin}: row {pos + 1} ({out.index[pos].date()}): negative Volume")
    incoherent = (out["High"] < out[["Open", "Close", "Low"]].max(axis=1) * (1 - 1e-9)) | (
        out["Low"] > out[["Open", "Close", "High"]].min(axis=1) * (1 + 1e-9)
    )
    if incoherent.any():
        pos = _first(incoherent)
        raise DataError(
            f"{origin}: row {pos + 1} ({out.index[pos].date()}): High/Low do not bracket Open/Close"
        )


def require_rows(frame: pd.DataFrame, needed: int, *, origin: str, why: str) -> None:
    """Fail clearly when there is not enough history for the window plus warm-up."""
    if len(frame) < needed:
        first = frame.index[0].date() if len(frame) else "-"
        last = frame.index[-1].date() if len(frame) else "-"
        raise DataError(
            f"{origin}: {len(frame)} rows ({first}..{last}) but {needed} are needed ({why}); "
            "supply a longer history or lower --years"
        )
