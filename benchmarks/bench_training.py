"""Speed figures for quantshift_ml on the bundled S&P 500 history (not a test).

Measures, with ``time.perf_counter`` over several repetitions (median reported):

* feature computation on the bars a 2-year window needs (window plus indicator
  warm-up) and on the whole bundled history;
* ``train_candidate`` with the default ``TrainConfig`` (2-year window, holdout,
  embargo, walk-forward CV, stress memory, baselines) and with the same config
  stretched to the longest window the bundled history allows;
* the monthly walk-forward with the default configuration, against the goal of
  at most 120 s on 2 cores.

``--quick`` runs fewer repetitions and a walk-forward over the last two years
only; the full-run time is then an estimate (per-month time x months).
``--smoke`` (``make bench-smoke``) runs each measurement once, skips the
whole-history training, walks forward over the last three months only and gives
no goal verdict: it shows the benchmark still works, not how fast.

Usage: ``.venv/bin/python benchmarks/bench_training.py [--quick | --smoke] [--json]``.
Exit code 0 whatever the figures are; benchmarks report, tests decide.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pandas as pd

from quantshift_ml import __version__
from quantshift_ml.data.sources import BundledSource
from quantshift_ml.model.features import WARMUP_ROWS, compute_features
from quantshift_ml.model.labels import HmmLabeler
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.gate import gate_for
from quantshift_ml.training.pipeline import TrainResult, train_candidate
from quantshift_ml.walkforward.monthly import run_walkforward

T = TypeVar("T")

GOAL_SECONDS = 120.0
"""Walk-forward wall-time goal for the default configuration (issue 2)."""


def measure(fn: Callable[[], T], repeat: int, *, warmup: bool = True
            ) -> tuple[dict[str, float], T]:
    """Wall time of ``fn`` over ``repeat`` runs (median, min, max s) and its last result.

    With ``warmup`` one extra untimed run comes first (imports, allocator, caches).
    """
    times: list[float] = []
    out = fn() if warmup else None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    assert out is not None
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}, out


def full_history_years(bars: pd.DataFrame, horizon: int = HmmLabeler().horizon) -> float:
    """Longest window (years, 2 decimals) that still leaves the indicator warm-up.

    The window ends at the newest labeled bar, ``horizon`` bars before the data's
    end for a labeler that needs its labels to settle (``hmm``: 20).
    """
    first_usable = bars.index[WARMUP_ROWS + 1]
    days = (bars.index[-1 - horizon] - first_usable).days
    return int(days / 365.25 * 100) / 100


def bars_for_window(bars: pd.DataFrame, years: float) -> pd.DataFrame:
    """The bars a ``years`` window ending at the last bar needs, warm-up included."""
    start = bars.index[-1] - pd.DateOffset(days=round(years * 365.25))
    first = max(0, int(bars.index.searchsorted(start)) - WARMUP_ROWS)
    return bars.iloc[first:]


def walkforward_months(bars: pd.DataFrame, years: float) -> int:
    """Months a full walk-forward retrains for (window plus warm-up available before them)."""
    idx = pd.DatetimeIndex(bars.index)
    earliest = idx[WARMUP_ROWS]
    span = pd.DateOffset(days=round(years * 365.25))
    starts = pd.Series(range(len(idx)), index=idx).groupby(idx.to_period("M")).first()
    return sum(1 for pos in starts if pos > 0 and idx[pos - 1] - span >= earliest)


def wf_start(bars: pd.DataFrame, quick: bool, smoke: bool) -> str | None:
    """First month of the measured walk-forward: all (None), 2 years (quick), 3 months (smoke)."""
    if not (quick or smoke):
        return None
    back = pd.DateOffset(months=3) if smoke else pd.DateOffset(years=2)
    return str((bars.index[-1] - back).date())


def _walkforward(bars: pd.DataFrame, default: TrainConfig, quick: bool, smoke: bool,
                 wf_reps: int, add: Any) -> dict[str, Any]:
    """The walk-forward's timing (its row via ``add``) and the full run's estimate."""
    full_months = walkforward_months(bars, default.years)
    start = wf_start(bars, quick, smoke)
    cpu0 = time.process_time()
    timing, report = measure(
        lambda: run_walkforward(bars, default, gate_for(default.labeler), start=start,
                                origin="bundled"),
        wf_reps, warmup=False)
    cpu = (time.process_time() - cpu0) / max(1, wf_reps)
    months = int(report["months"])
    add("walk-forward, default" + (f" (from {start})" if start else ""), months, wf_reps,
        timing)
    estimate = timing["median"] / months * full_months if start else timing["median"]
    verdict = None if smoke else "PASS" if estimate <= GOAL_SECONDS else "MISS"
    return {
        "months_measured": months,
        "months_full_run": full_months,
        "wall_seconds_median": round(timing["median"], 2),
        "cpu_seconds_per_run": round(cpu, 2),
        "full_run_seconds": round(estimate, 1),
        "estimated": start is not None,
        "goal_seconds": GOAL_SECONDS,
        "verdict": verdict,
        "gate_pass_rate": report["gate_pass_rate"],
    }


def run(quick: bool, repeat: int | None, wf_repeat: int | None, smoke: bool = False
        ) -> dict[str, Any]:
    reps = 1 if smoke else repeat if repeat is not None else (3 if quick else 5)
    wf_reps = 1 if smoke else wf_repeat if wf_repeat is not None else (1 if quick else 3)
    feature_reps = 1 if smoke else reps * 4
    warm = not smoke
    bars = BundledSource().load()
    whole_years = full_history_years(bars)
    two_y = bars_for_window(bars, 2.0)
    default = TrainConfig()
    whole = TrainConfig(years=whole_years)
    rows: list[dict[str, Any]] = []

    def add(name: str, n_rows: int, runs: int, timing: dict[str, float]) -> None:
        rows.append({"measure": name, "rows": n_rows, "runs": runs, **timing})

    def train_rows(res: TrainResult) -> int:
        m = res.metrics
        return int(m["train_rows"] + m["stress_memory_rows"] + m["holdout_rows"])

    timing, _ = measure(lambda: compute_features(two_y), feature_reps, warmup=warm)
    add("features, 2-year window + warm-up", len(two_y), feature_reps, timing)
    timing, _ = measure(lambda: compute_features(bars), feature_reps, warmup=warm)
    add("features, whole history", len(bars), feature_reps, timing)
    timing, res = measure(lambda: train_candidate(bars, default), reps, warmup=warm)
    add("train_candidate, default (2 y)", train_rows(res), reps, timing)
    if not smoke:
        whole_reps = max(1, reps - 2)
        timing, res = measure(lambda: train_candidate(bars, whole), whole_reps)
        add(f"train_candidate, whole history ({whole_years:g} y)", train_rows(res), whole_reps,
            timing)

    walkforward = _walkforward(bars, default, quick, smoke, wf_reps, add)
    return {
        "quantshift_ml": __version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "quick": quick,
        "smoke": smoke,
        "rows": rows,
        "walkforward": walkforward,
    }


def render(result: dict[str, Any]) -> str:
    head = (f"quantshift_ml {result['quantshift_ml']}, Python {result['python']}, "
            f"{result['cpus']} CPUs, load {result['load_average_1m']}"
            + (" (smoke run)" if result["smoke"] else " (quick run)" if result["quick"] else ""))
    lines = [head, "",
             (f"{'measure':<44}{'rows':>7}{'runs':>6}{'median s':>11}{'min s':>9}"
              f"{'max s':>9}")]
    for r in result["rows"]:
        lines.append(f"{r['measure']:<44}{r['rows']:>7}{r['runs']:>6}"
                     f"{r['median']:>11.4f}{r['min']:>9.4f}{r['max']:>9.4f}")
    wf = result["walkforward"]
    what = "full walk-forward (estimated)" if wf["estimated"] else "full walk-forward"
    verdict = (f"goal <= {wf['goal_seconds']:.0f} s: {wf['verdict']}" if wf["verdict"]
               else "smoke run: no goal verdict")
    lines += ["", (f"{what}: {wf['full_run_seconds']:.1f} s wall for "
                   f"{wf['months_full_run']} monthly retrains "
                   f"({wf['months_measured']} measured, "
                   f"{wf['cpu_seconds_per_run']:.1f} s CPU per measured run); {verdict}"),
              f"gate pass rate of the measured walk-forward: {wf['gate_pass_rate']:.1%}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="fewer repetitions; walk-forward over the last 2 years only")
    mode.add_argument("--smoke", action="store_true",
                      help="each measurement once, last 3 months' walk-forward, no verdict")
    parser.add_argument("--repeat", type=int, default=None,
                        help="repetitions for training (features run 4x as many)")
    parser.add_argument("--wf-repeat", type=int, default=None,
                        help="repetitions of the walk-forward (default 3, quick 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = run(args.quick, args.repeat, args.wf_repeat, args.smoke)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
