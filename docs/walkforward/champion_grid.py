"""The champion policy's record length and switching margin, chosen on evidence.

Runs the monthly walk-forward's refits once per market (the default model and
labeler, as ``quantshift-ml walkforward``), then evaluates the champion policy
(training/champion.py) for every record length and margin of the grid on the
same out-of-time predictions: no extra fitting. Per choice: the champion's
five-regime balanced accuracy on the final labels, its margin over the best
fixed family, the long/flat Sharpe ratio, the number of switches and the share
of months each family led. Prints a table and writes champion_grid.json.

    .venv/bin/python docs/walkforward/champion_grid.py [--nasdaq /tmp/nasdaq.csv]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml.champion import policy as ch
from quantshift_ml.data import BundledSource, CsvSource
from quantshift_ml.training import report as rp
from quantshift_ml.training.baselines import balanced_accuracy
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.gate import gate_for
from quantshift_ml.walkforward.monthly import _collect

RECORDS: tuple[int | None, ...] = (6, 12, 24, None)
MARGINS = (0.0, 0.01, 0.02, 0.05)
MIN_ROWS = (60, 250)
"""Settled rows a record needs before it may decide (about three months; a year)."""
HERE = Path(__file__).resolve().parent


def market(bars: pd.DataFrame, origin: str) -> dict[str, Any]:
    config = TrainConfig()
    config = replace(config, model=replace(config.model, n_jobs=-1))
    full, pooled = _collect(bars, config, gate_for("hmm"), None, origin)
    y = np.concatenate(pooled.truth)
    pos = np.concatenate(pooled.where)
    preds = {k: np.concatenate(v) for k, v in pooled.preds.items()}
    rows = ch.Months(pos=pos, month=np.concatenate(
        [np.full(len(w), k) for k, w in enumerate(pooled.where)]),
        known_end=pooled.known_end, known=pooled.known)
    fam = {f: preds[r] for f, r in ch.WALKFORWARD_ROWS.items()}
    close = full.bars["Close"].to_numpy(dtype=float)
    rets = close[np.minimum(pos + 1, len(close) - 1)] / close[pos] - 1.0
    fixed = {f: {"balanced_accuracy": round(balanced_accuracy(y, p), 4),
                 "sharpe": rp.strategy(p, rets)["sharpe"]} for f, p in fam.items()}
    best = max(v["balanced_accuracy"] for v in fixed.values())
    grid = []
    for min_rows in MIN_ROWS:
        for record in RECORDS:
            for margin in MARGINS:
                grid.append(_choice(rows, fam, y, rets, record, margin, min_rows, best))
    return {"origin": origin, "months": len(pooled.windows), "fixed": fixed, "grid": grid}


def _choice(rows: ch.Months, fam: dict[str, np.ndarray], y: np.ndarray, rets: np.ndarray,
            record: int | None, margin: float, min_rows: int, best: float) -> dict[str, Any]:
    row, chosen = ch.evaluate(rows, fam, record_months=record, margin=margin,
                              min_rows=min_rows)
    bal = round(balanced_accuracy(y, row), 4)
    return {"min_rows": min_rows, "record_months": record or "expanding", "margin": margin,
            "balanced_accuracy": bal, "vs_best_fixed": round(bal - best, 4),
            "sharpe": rp.strategy(row, rets)["sharpe"], **ch.summary(chosen, list(fam))}


def shares(g: dict[str, Any]) -> str:
    """A grid row's share of months per family, in the tables' column order."""
    s = g["share_of_months"]
    return f"{s['hmm_filter']:.2f} / {s['hmm_range_filter']:.2f} / {s['forest']:.2f}"


def show(name: str, res: dict[str, Any]) -> None:
    print(f"\n{name}: {res['months']} months; fixed families (balanced, Sharpe): " + ", ".join(
        f"{f} {v['balanced_accuracy']:.4f} / {v['sharpe']:.3f}" for f, v in res["fixed"].items()))
    print(f"{'min rows':>8} {'record':>9} {'margin':>6} {'balanced':>8} {'vs best':>8} "
          f"{'Sharpe':>7} {'switches':>8}  share of months "
          "(hmm_filter / hmm_range_filter / forest)")
    for g in res["grid"]:
        print(f"{g['min_rows']:>8} {g['record_months']!s:>9} {g['margin']:>6} "
              f"{g['balanced_accuracy']:>8.4f} "
              f"{g['vs_best_fixed']:>+8.4f} {g['sharpe']:>7.3f} {g['switches']:>8}  "
              + shares(g))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nasdaq", type=Path, default=Path("/tmp/nasdaq.csv"),
                    help="the NASDAQ CSV (docs/model.md, Reproduce)")
    a = ap.parse_args(argv)
    out = {"sp500": market(BundledSource().load(), "bundled")}
    if a.nasdaq.is_file():
        out["nasdaq"] = market(CsvSource(a.nasdaq).load(), "csv")
    for name, res in out.items():
        show(name, res)
    (HERE / "champion_grid.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
