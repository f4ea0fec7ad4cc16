"""Cost of one monitor run, and against an earlier revision in the same run (not a test).

Builds one store the way a host that has run for a while looks: four promoted
versions (three backups), A/B on, 250 logged answers of the newest bars with both
arms' answers, then runs ``run_monitor`` on it with the bundled S&P 500, every
check on (live accuracy, live outcomes, input and importance drift, A/B,
backups). Each run is a fresh process (``--child``), as cron's is, timed inside
it: wall and CPU seconds of ``run_monitor`` alone, and its ``reads``.

``--compare REV`` runs the same store on ``git archive REV``'s package too,
interleaved run by run, and reports the ratio of medians: the machines are shared
and noisy, so the two trees are measured side by side, never against a figure
from another day. Claim under test (issue 27): one run context reads the data,
the labels, the log and the artifacts once, so a run costs less than before.

``--smoke`` (``make bench-smoke``): one run, no comparison.

Usage: ``.venv/bin/python benchmarks/bench_monitor.py [--runs N] [--compare REV] [--json]``.
Exit code 0 whatever the figures are; benchmarks report, tests decide.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def build_store(root: Path) -> None:
    """Four promoted versions, A/B on, 250 answers logged with both arms'."""
    from quantshift_ml.data.sources import BundledSource
    from quantshift_ml.model.features import compute_features
    from quantshift_ml.model.labels import make_labeler
    from quantshift_ml.ops import operations
    from quantshift_ml.serving import predlog
    from quantshift_ml.training.config import ModelParams, TrainConfig
    from quantshift_ml.training.gate import gate_for

    config = TrainConfig(model=ModelParams(n_estimators=25), cv_folds=3, families=("forest",))
    gate = gate_for("hmm", {"beat_baseline": "none", "max_regression": 1.0})
    for as_of in ("2017-06-30", "2017-12-29", "2018-06-29", "2018-12-31"):
        operations.train(BundledSource(), root=root, config=config, gate=gate, promote=True,
                         as_of=as_of)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/ab.json").write_text(json.dumps({"enabled": True, "split": 0.5}))
    version = json.loads((root / "models/regime_classifier.json").read_text())["version"]
    bars = BundledSource().load()
    rules = make_labeler("rules").label(bars, compute_features(bars))  # the same-day rule
    for i, day in enumerate(bars.index[-250:]):
        rule = str(rules.get(day, "Bull"))
        arm = "rules" if i % 2 else "ml"
        predlog.append(root, predlog.Prediction(
            ts=f"{day.date()}T21:00:00+00:00", symbol="SPY", bar_date=str(day.date()),
            regime=rule if arm == "rules" else "Bull", probabilities={"Bull": 1.0},
            model_version=version, arm=arm, ml_regime="Bull", rules_regime=rule,
            client=f"bot-{i % 7}"))


def child(root: Path) -> dict[str, Any]:
    """One monitor run in this process: wall and CPU seconds of ``run_monitor``."""
    from quantshift_ml.data.sources import BundledSource
    from quantshift_ml.monitoring.monitor import run_monitor

    source = BundledSource()
    wall, cpu = time.perf_counter(), time.process_time()
    report = run_monitor(root, source=source, symbol="SPY")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "status": report["status"],
            "checks": len(report["checks"]), "reads": report.get("reads")}


def run_child(root: Path, pythonpath: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    out = subprocess.run([sys.executable, __file__, "--child", str(root)], env=env,
                         check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def export(rev: str, into: Path) -> Path:
    """``git archive REV python/`` unpacked under ``into``: that revision's package."""
    archive = into / "rev.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), rev, "python"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "rev", filter="data")
    return into / "rev/python"


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"runs": len(runs), "wall_s_median": statistics.median(r["wall_s"] for r in runs),
            "cpu_s_median": statistics.median(r["cpu_s"] for r in runs),
            "status": runs[0]["status"], "checks": runs[0]["checks"], "reads": runs[0]["reads"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="runs per tree (default 7)")
    ap.add_argument("--compare", metavar="REV", default=None,
                    help="also run REV's package (git revision) on the same store")
    ap.add_argument("--smoke", action="store_true", help="one run, no comparison")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return 0
    from quantshift_ml.store import signing

    with tempfile.TemporaryDirectory(prefix="qs-bench-mon-") as tmp:
        signing.generate(Path(tmp) / "keys")
        os.environ[signing.KEYS_ENV] = str(Path(tmp) / "keys")
        root = Path(tmp) / "root"
        build_store(root)
        trees = {"current": REPO / "python"}
        if args.compare and not args.smoke:
            trees[args.compare] = export(args.compare, Path(tmp))
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for _ in range(1 if args.smoke else args.runs):
            for name, path in trees.items():  # interleaved: noise hits both alike
                runs[name].append(run_child(root, path))
    result: dict[str, Any] = {name: summary(r) for name, r in runs.items()}
    if args.compare and args.compare in result:
        base, cur = result[args.compare], result["current"]
        result["ratio_current_over_" + args.compare] = {
            k: round(cur[k] / base[k], 3) for k in ("wall_s_median", "cpu_s_median")}
    print(json.dumps(result, indent=2) if args.json else "\n".join(
        f"{name:<12} {json.dumps(value)}" for name, value in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
