"""Market data: sources (bundled, CSV, yfinance), validation and the training window.
May import: store (its safe file writes for the download cache)."""

from quantshift_ml.data.sources import (
    BundledSource,
    CsvSource,
    DataSource,
    YFinanceSource,
    make_source,
)
from quantshift_ml.data.validation import REQUIRED_COLUMNS, validate_ohlcv
from quantshift_ml.data.window import select_window

__all__ = [
    "REQUIRED_COLUMNS",
    "BundledSource",
    "CsvSource",
    "DataSource",
    "YFinanceSource",
    "make_source",
    "select_window",
    "validate_ohlcv",
]
