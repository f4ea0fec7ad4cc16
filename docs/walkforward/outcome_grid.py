"""The champion chosen on the primary outcome: record length, confidence and guard on evidence.

Issue 31. Runs the monthly walk-forward's refits once per market (default model
and labeler, as ``quantshift-ml walkforward``; cached in --cache), then evaluates
the outcome policy (training/outcome_policy.py, through champion.evaluate_on)
for every choice of the grid on the same out-of-time predictions. Per choice:
the champion's economic Sharpe (5 bp costs, next-bar execution, the A/B test's
exposure map), its five-regime balanced accuracy, the number of switches, the
share of months each family led. Prints one table per market and a summary
across markets, and writes outcome_grid.json.

    .venv/bin/python docs/walkforward/outcome_grid.py --universe /tmp/universe/universe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from champion_grid import shares  # this folder's scripts run from here

from quantshift_ml.champion import outcome_policy as op
from quantshift_ml.champion import policy as ch
from quantshift_ml.data import BundledSource, CsvSource
from quantshift_ml.training.baselines import balanced_accuracy
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.gate import gate_for
from quantshift_ml.walkforward.monthly import _collect

RECORDS: tuple[int | None, ...] = (12, 24, 36, None)
CONFIDENCES = (0.5, 0.7, 0.8, 0.9)
GUARDS = (0.02, 0.05, 1.0)
HERE = Path(__file__).resolve().parent


def collected(name: str, bars: Any, cache: Path) -> dict[str, Any]:
    """The walk-forward's pooled rows of one market (refitted once, then read back)."""
    path = cache / f"{name}.npz"
    if path.is_file():  # plain arrays (no pickle), written just below
        return _read(path)
    config = TrainConfig()
    config = replace(config, model=replace(config.model, n_jobs=-1))
    full, pooled = _collect(bars, config, gate_for("hmm"), None, name)
    out = {"pos": np.concatenate(pooled.where), "truth": np.concatenate(pooled.truth),
           "month": np.concatenate([np.full(len(w), k) for k, w in enumerate(pooled.where)]),
           "known_end": list(pooled.known_end), "known": list(pooled.known),
           "preds": {f: np.concatenate(pooled.preds[r]) for f, r in ch.WALKFORWARD_ROWS.items()},
           "close": full.bars["Close"], "horizon": full.labeler.horizon,
           "months": len(pooled.windows)}
    cache.mkdir(parents=True, exist_ok=True)
    lengths = [len(k) for k in out["known"]]
    np.savez(path, pos=out["pos"], truth=out["truth"].astype(str), month=out["month"],
             known_end=np.asarray(out["known_end"]), known=np.concatenate(out["known"]),
             known_len=np.asarray(lengths), close=out["close"].to_numpy(dtype=float),
             dates=out["close"].index.strftime("%Y-%m-%d").to_numpy(dtype=str),
             horizon=out["horizon"], months=out["months"],
             **{f"pred_{f}": p.astype(str) for f, p in out["preds"].items()})
    return out


def _read(path: Path) -> dict[str, Any]:
    import pandas as pd

    z = np.load(path, allow_pickle=False)
    ends = np.cumsum(z["known_len"])
    return {"pos": z["pos"], "truth": z["truth"].astype(object), "month": z["month"],
            "known_end": [int(v) for v in z["known_end"]],
            "known": np.split(z["known"], ends[:-1]),
            "preds": {f: z[f"pred_{f}"].astype(object) for f in ch.WALKFORWARD_ROWS},
            "close": pd.Series(z["close"], index=pd.DatetimeIndex(z["dates"])),
            "horizon": int(z["horizon"]), "months": int(z["months"])}


def market(c: dict[str, Any]) -> dict[str, Any]:
    rows = ch.Months(pos=c["pos"], month=c["month"], known_end=c["known_end"], known=c["known"])
    mk = op.Market.of(c["close"])
    fam = c["preds"]

    def sharpe(p: np.ndarray) -> float:
        v, _ = op.values("economic", p, c["pos"], mk)
        return round(op.statistic("economic", v[~np.isnan(v)]), 3)

    fixed = {f: {"balanced_accuracy": round(balanced_accuracy(c["truth"], p), 4),
                 "sharpe": sharpe(p)} for f, p in fam.items()}
    grid = []
    for record in RECORDS:
        for conf in CONFIDENCES:
            for guard in GUARDS:
                row, chosen = ch.evaluate_on(rows, fam, mk, outcome="economic",
                                             record_months=record, confidence=conf,
                                             guard=guard, horizon=c["horizon"])
                grid.append({"record_months": record or "expanding", "confidence": conf,
                             "guard": guard, "sharpe": sharpe(row),
                             "balanced_accuracy": round(balanced_accuracy(c["truth"], row), 4),
                             **ch.summary(chosen, list(fam))})
    return {"months": c["months"], "fixed": fixed, "grid": grid}


def show(name: str, res: dict[str, Any]) -> None:
    best_s = max(v["sharpe"] for v in res["fixed"].values())
    best_b = max(v["balanced_accuracy"] for v in res["fixed"].values())
    print(f"\n{name}: {res['months']} months; fixed (balanced / Sharpe): " + ", ".join(
        f"{f} {v['balanced_accuracy']:.4f} / {v['sharpe']:.3f}" for f, v in res["fixed"].items()))
    print(f"{'record':>9} {'conf':>5} {'guard':>5} {'Sharpe':>7} {'vs best':>7} {'balanced':>8} "
          f"{'vs best':>8} {'switches':>8}  led (hmm_filter / hmm_range_filter / forest)")
    for g in res["grid"]:
        print(f"{g['record_months']!s:>9} {g['confidence']:>5} {g['guard']:>5} "
              f"{g['sharpe']:>7.3f} {g['sharpe'] - best_s:>+7.3f} {g['balanced_accuracy']:>8.4f} "
              f"{g['balanced_accuracy'] - best_b:>+8.4f} {g['switches']:>8}  " + shares(g))


def summary(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per choice, across markets: worst and mean Sharpe gap to the best fixed family."""
    out = []
    first = next(iter(results.values()))
    for i, g in enumerate(first["grid"]):
        gaps, bal_gaps = [], []
        for res in results.values():
            best_s = max(v["sharpe"] for v in res["fixed"].values())
            best_b = max(v["balanced_accuracy"] for v in res["fixed"].values())
            gaps.append(res["grid"][i]["sharpe"] - best_s)
            bal_gaps.append(res["grid"][i]["balanced_accuracy"] - best_b)
        out.append({k: g[k] for k in ("record_months", "confidence", "guard")}
                   | {"worst_sharpe_gap": round(min(gaps), 3),
                      "mean_sharpe_gap": round(float(np.mean(gaps)), 3),
                      "worst_balanced_gap": round(min(bal_gaps), 4)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--universe", type=Path, default=None,
                    help="universe file (docs/walkforward/universe.md); default: bundled only")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/qs-outcome-grid"))
    a = ap.parse_args(argv)
    sources: dict[str, Any] = {"sp500": BundledSource()}
    if a.universe:
        for m in json.loads(a.universe.read_text())["markets"]:
            if m.get("csv"):
                sources[m["name"]] = CsvSource(a.universe.parent / m["csv"])
    results = {}
    for name, src in sources.items():
        results[name] = market(collected(name, src.load(), a.cache))
        show(name, results[name])
    summ = summary(results)
    print("\nacross markets (Sharpe gap to the best fixed family: worst / mean; balanced: worst)")
    for s in summ:
        print(f"{s['record_months']!s:>9} {s['confidence']:>5} {s['guard']:>5} "
              f"{s['worst_sharpe_gap']:>+7.3f} {s['mean_sharpe_gap']:>+7.3f} "
              f"{s['worst_balanced_gap']:>+8.4f}")
    (HERE / "outcome_grid.json").write_text(json.dumps(
        {"markets": results, "summary": summ}, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
