"""Causal, scale-free technical features.

Every feature at row t uses only bars 0..t (rolling windows and EWMs that look
back, never forward), so a row's features do not change when later rows are
appended; a test proves it. Prices enter only as ratios so a model trained on
the S&P 500 index applies to SPY (a tenth of the level) unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml import defaults

FEATURES: tuple[str, ...] = (
    "atr_ratio",
    "sma20_slope",
    "sma50_slope",
    "sma200_slope",
    "macd",
    "macd_signal",
    "macd_hist",
    "rsi",
    "volume_ratio",
    "close_vs_sma20",
    "close_vs_sma50",
    "close_vs_sma200",
    "realized_vol_20",
    "realized_vol_5",
    "realized_vol_10",
    "realized_vol_60",
    "parkinson_vol_5",
    "parkinson_vol_20",
    "drawdown_252",
    "return_20",
    "ewma_vol_fast",
    "ewma_vol_slow",
    "abs_return",
    "range_today",
)
"""Feature columns, in the order the model sees them."""

ATR_PERIOD = 14
ATR_BASELINE = 100
"""ATR ratio = ATR(14) / mean ATR(14) over the last 100 bars: >1 means more range than usual."""
SLOPE_LAG = 5
"""SMA slope = relative change of the SMA over 5 bars (one trading week)."""
DRAWDOWN_WINDOW = 252
"""Drawdown = close / highest close of the last 252 bars (one year) - 1."""
WARMUP_ROWS = 260
"""Bars needed before the first usable feature row: SMA-200 + slope lag + EWM settling."""


def _wilder(series: pd.Series, period: int) -> pd.Series:
    return series.ewm(alpha=1.0 / period, adjust=False, min_periods=period).mean()


def compute_features(bars: pd.DataFrame) -> pd.DataFrame:
    """Compute ``FEATURES`` for every bar.

    Args:
        bars: validated OHLCV frame indexed by date (see ``validate_ohlcv``).

    Returns:
        Frame with the same index and the ``FEATURES`` columns; the first
        ``WARMUP_ROWS`` rows may contain NaN and must not be used.
    """
    close = bars["Close"]
    high, low = bars["High"], bars["Low"]
    prev_close = close.shift(1)
    true_range = pd.concat(
        [high - low, (high - prev_close).abs(), (low - prev_close).abs()], axis=1
    ).max(axis=1)
    atr = _wilder(true_range, ATR_PERIOD)
    out = pd.DataFrame(index=bars.index)
    out["atr_ratio"] = atr / atr.rolling(ATR_BASELINE, min_periods=ATR_BASELINE).mean()

    for n in (20, 50, 200):
        sma = close.rolling(n, min_periods=n).mean()
        out[f"sma{n}_slope"] = sma / sma.shift(SLOPE_LAG) - 1.0
        out[f"close_vs_sma{n}"] = close / sma - 1.0

    ema12 = close.ewm(span=12, adjust=False, min_periods=12).mean()
    ema26 = close.ewm(span=26, adjust=False, min_periods=26).mean()
    macd = (ema12 - ema26) / close
    signal = macd.ewm(span=9, adjust=False, min_periods=9).mean()
    out["macd"], out["macd_signal"], out["macd_hist"] = macd, signal, macd - signal

    delta = close.diff()
    gain = _wilder(delta.clip(lower=0.0), 14)
    loss = _wilder((-delta).clip(lower=0.0), 14)
    rs = gain / loss.replace(0.0, np.nan)
    out["rsi"] = (100.0 - 100.0 / (1.0 + rs)).fillna(100.0).where(gain.notna())

    vol = bars["Volume"].replace(0.0, np.nan)
    out["volume_ratio"] = (vol / vol.rolling(20, min_periods=20).mean()).fillna(1.0)

    _volatility(out, bars)
    out["drawdown_252"] = close / close.rolling(DRAWDOWN_WINDOW, min_periods=DRAWDOWN_WINDOW
                                                ).max() - 1.0
    out["return_20"] = close / close.shift(20) - 1.0
    return out[list(FEATURES)]


def _volatility(out: pd.DataFrame, bars: pd.DataFrame) -> None:
    """Annualised close-to-close and Parkinson (high-low range) volatilities.

    The range estimator sees intraday swings that closes hide; it is what lets a
    model tell a turbulent day from a calm one sooner than returns alone (the
    regime HMM sees only close-to-close returns).
    """
    log_ret = np.log(bars["Close"]).diff()
    for n in (20, 5, 10, 60):
        out[f"realized_vol_{n}"] = log_ret.rolling(n, min_periods=n).std() * np.sqrt(252.0)
    hl = np.log(bars["High"] / bars["Low"]) ** 2 / (4.0 * np.log(2.0))
    for n in (5, 20):
        out[f"parkinson_vol_{n}"] = np.sqrt(hl.rolling(n, min_periods=n).mean() * 252.0)
    # what a volatility filter reacts to: today's move and exponentially weighted
    # variance (half-lives of 3 and 11 days; 11 is RiskMetrics' lambda = 0.94)
    sq = log_ret**2
    out["ewma_vol_fast"] = np.sqrt(sq.ewm(halflife=3, min_periods=20).mean() * 252.0)
    out["ewma_vol_slow"] = np.sqrt(sq.ewm(halflife=11, min_periods=20).mean() * 252.0)
    out["abs_return"] = log_ret.abs() * np.sqrt(252.0)
    out["range_today"] = np.sqrt(hl * 252.0)


def usable(features: pd.DataFrame) -> pd.Series:
    """Boolean mask of rows whose features are all defined (past the warm-up)."""
    return features.notna().all(axis=1)


HMM_FILTER = defaults.HMM_FILTER
"""Model input of the ``hmm`` labeler: the regime HMM's causal P(turbulent) at t."""


def with_hmm_filter(features: pd.DataFrame, bars: pd.DataFrame, fitted: Any) -> pd.DataFrame:
    """``features`` plus the ``hmm_filter`` column computed with the fitted HMM.

    ``fitted``: the labeler's ``HmmParams`` (or its ``to_dict()`` from a bundle's
    metadata), or None (then ``features`` is returned as is). The filter at row t
    reads returns up to t only, so the column is as causal as the others; it is
    the classic counterpart the forest must beat, given to it as one more input.
    """
    if fitted is None:
        return features
    from quantshift_ml.model import hmm

    params = fitted if isinstance(fitted, hmm.HmmParams) else hmm.HmmParams.from_dict(fitted)
    p = np.full(len(bars), np.nan)  # over every bar, then aligned: same start as training
    p[1:] = hmm.filtered(params, hmm.returns_pct(bars["Close"])[1:])
    return features.assign(**{HMM_FILTER: pd.Series(p, index=bars.index).reindex(
        features.index).to_numpy()})


def model_frame(bars: pd.DataFrame, bundle_labeler: dict[str, Any] | None,
                filter_spec: dict[str, Any] | None = None) -> pd.DataFrame:
    """Every input a stored model may ask for: ``FEATURES`` and, for ``hmm``, the filter;
    with a filter release's ``filter_spec`` (its metadata's ``filter``), that filter's
    own P(turbulent) too (``filterspec.FILTER_P``)."""
    frame = with_hmm_filter(compute_features(bars), bars, (bundle_labeler or {}).get("fitted"))
    if filter_spec:
        from quantshift_ml.model.filterspec import FilterSpec, with_column

        frame = with_column(FilterSpec.from_dict(filter_spec, "metadata"), bars, frame)
    return frame
