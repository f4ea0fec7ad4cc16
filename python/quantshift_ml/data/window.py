"""The rolling training window: ``years`` of bars ending at ``as_of``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quantshift_ml.errors import DataError

if TYPE_CHECKING:
    import pandas as pd


def select_window(frame: pd.DataFrame, *, years: float, as_of: str | None = None) -> pd.Timestamp:
    """Return the first date of the window; the caller keeps earlier rows for warm-up.

    ``as_of`` defaults to the last bar. Rows after ``as_of`` must be dropped by the
    caller (see ``truncate``) so nothing from the future leaks into training.
    """
    import pandas as pd  # imported on use: the service starts without pandas

    if years <= 0:
        raise DataError(f"--years must be positive, got {years}")
    end = frame.index[-1] if as_of is None else pd.Timestamp(as_of)
    return end - pd.DateOffset(days=round(years * 365.25))


def truncate(frame: pd.DataFrame, as_of: str | None) -> pd.DataFrame:
    """Drop bars after ``as_of`` (inclusive end); fail when none remain."""
    import pandas as pd  # imported on use: the service starts without pandas

    if as_of is None:
        return frame
    try:
        end = pd.Timestamp(as_of)
    except (ValueError, TypeError) as exc:
        raise DataError(f"--as-of {as_of!r} is not a date (use YYYY-MM-DD)") from exc
    out = frame.loc[:end]
    if out.empty:
        raise DataError(f"--as-of {as_of} is before the first bar {frame.index[0].date()}")
    return out
