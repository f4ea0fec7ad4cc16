"""The monitor's ``live_outcomes`` check: the served model judged on what the market did.

``live_accuracy`` scores the model on its own target (the settled labeler state).
This check scores the same logged answers, one per (symbol, bar, version) of the
active version, on two outcomes that the model does not define
(``quantshift_ml.outcomes``):

* ``forward_vol``: was the calm/turbulent call right about the next 20 bars'
  realised volatility; WARNING below ``live_vol_warn`` (0.24, the 10th
  percentile of the model's monthly ``forward_vol`` accuracy in the S&P 500
  walk-forward: "worse than nine months in ten"), CRITICAL below
  ``live_vol_crit``. Its default, the 2nd percentile, is 0.0: in 10 of the 201
  walk-forward months the model called every bar wrong (a calm month turning
  turbulent, which no causal signal foresees), so forward volatility alone
  never pages; set it above 0 to make it;
* ``economic``: the return of the bot's regime-conditioned position over the
  scored bars minus the index's own return over them; WARNING below
  ``live_excess_warn`` (-0.026, the 10th percentile of the walk-forward's monthly
  excess return). Never CRITICAL on its own: a month of returns is mostly noise.

Bars whose 20 forward bars have not passed yet are waiting, not wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml.data.sources import DataSource
from quantshift_ml.monitoring.checks import CRITICAL, OK, UNKNOWN, WARNING, check
from quantshift_ml.monitoring.context import RunContext

NAME = "live_outcomes"


def _answers(ctx: RunContext, version: str, symbol: str | None) -> dict[str, str]:
    """bar date -> the model's answer, one per bar, for the active version."""
    out: dict[str, str] = {}
    for sample in ctx.samples():
        p = sample.prediction
        if p.model_version == version and (symbol is None or p.symbol == symbol):
            out.setdefault(p.bar_date, p.model_regime)
    return out


def scored(root: Path, version: str, source: DataSource, symbol: str | None = None,
           config: Any = None, ctx: RunContext | None = None) -> dict[str, Any]:
    """The active version's answers on forward_vol and economic, with their counts.

    ``ctx``: the monitor run's reads (the log and the data read once per run).
    """
    from quantshift_ml.outcomes import economic_returns
    from quantshift_ml.outcomes.definitions import correct

    ctx = ctx or RunContext(root, source, symbol)
    answers = _answers(ctx, version, symbol)
    frame = ctx.forward_outcomes(config)
    dates = [d for d in sorted(answers) if pd.Timestamp(d) in frame.index]
    rows = frame.loc[pd.DatetimeIndex(dates)] if dates else frame.iloc[:0]
    calls = np.asarray([answers[d] for d in dates], dtype=object)
    right, known = correct("forward_vol", calls, rows)
    ret = rows["next_return"].to_numpy()
    paid = ~np.isnan(ret)
    daily, _ = economic_returns(calls[paid], ret[paid], config)
    return {"answers": len(answers), "not_in_data": len(answers) - len(dates),
            "forward_vol": {"samples": int(known.sum()), "pending": int((~known).sum()),
                            "accuracy": round(float(right[known].mean()), 4)
                            if known.any() else None},
            "economic": {"samples": int(paid.sum()),
                         "return": round(float(daily.sum()), 4),
                         "index_return": round(float(ret[paid].sum()), 4),
                         "excess_return": round(float(daily.sum() - ret[paid].sum()), 4)}}


def live_outcomes_check(root: Path, meta: dict[str, Any], source: DataSource, t: Any,
                        symbol: str | None = None, config: Any = None,
                        ctx: RunContext | None = None) -> dict[str, Any]:
    """The check; ``t`` carries ``live_vol_warn/crit``, ``live_excess_warn`` and
    ``live_min_samples`` (``monitor.Thresholds``)."""
    import sqlite3

    from quantshift_ml.errors import QuantshiftError

    version = str(meta.get("version"))
    try:
        rep = scored(root, version, source, symbol, config, ctx)
    except (QuantshiftError, sqlite3.Error, OSError, ValueError, KeyError) as exc:
        return check(NAME, UNKNOWN, None, f"unknown: {exc}")
    fv, eco = rep["forward_vol"], rep["economic"]
    if fv["samples"] < t.live_min_samples:
        return check(NAME, UNKNOWN, None, f"unknown: {fv['samples']} predictions of {version} "
                     f"with settled forward outcomes (< {t.live_min_samples} needed, "
                     f"{fv['pending']} waiting for their 20 bars)", outcomes=rep)
    acc, excess = fv["accuracy"], eco["excess_return"]
    status = CRITICAL if acc < t.live_vol_crit else WARNING if acc < t.live_vol_warn else OK
    if status == OK and excess < t.live_excess_warn:
        status = WARNING
    return check(NAME, status, acc,
                 f"forward_vol {acc:.3f} over {fv['samples']} bars (warn < {t.live_vol_warn:g},"
                 f" critical < {t.live_vol_crit:g}); economic {eco['return']:+.2%} against the "
                 f"index's {eco['index_return']:+.2%} over {eco['samples']} bars (warn when "
                 f"{excess:+.2%} < {t.live_excess_warn:+.2%})", outcomes=rep)
