"""Run every ``benchmarks/bench_*.py`` with ``--smoke``: a benchmark that breaks fails CI.

Why: nothing else runs the benchmarks, so one can rot unseen (issue 30: bench_deploy
stopped working when releases became signed, and nobody saw). ``make bench-smoke``,
part of ``make test``, runs each script once at its smallest sizes without a goal
verdict; speed is judged by the full runs, never here.

The scripts are found by glob, so a new benchmark is smoked the day it lands. Each
must list ``--smoke`` in its ``--help``; one that does not, or that exits non-zero,
fails the run, named in the summary. ``bench_deploy.py`` needs root and ``make
wheelhouse`` (nspawn test hosts), like ``make molecule``; without root it fails
saying so.

    .venv/bin/python benchmarks/smoke.py [NAME ...]    # default: every bench_*.py
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: a smoke run that takes longer than this has hung (bench_deploy's is about 4 min)
TIMEOUT_S = 1800.0


def scripts(names: list[str]) -> list[Path]:
    """Every bench_*.py here, or the ones named (``bench_x`` or ``bench_x.py``)."""
    found = sorted(HERE.glob("bench_*.py"))
    if not names:
        return found
    wanted = {n if n.endswith(".py") else f"{n}.py" for n in names}
    unknown = wanted - {p.name for p in found}
    if unknown:
        raise SystemExit(f"no such benchmark: {', '.join(sorted(unknown))}")
    return [p for p in found if p.name in wanted]


def accepts_smoke(script: Path) -> bool:
    """Whether the script's ``--help`` lists ``--smoke`` (argparse prints every option)."""
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                         text=True, timeout=300, check=False)
    return res.returncode == 0 and "--smoke" in res.stdout


def run_smoke(script: Path) -> int:
    """The script's exit code; on a hang, SIGINT first so it can shut its test hosts down."""
    proc = subprocess.Popen([sys.executable, str(script), "--smoke"])
    try:
        return proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"smoke: {script.name} still running after {TIMEOUT_S:.0f} s: interrupting",
              file=sys.stderr, flush=True)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 124


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: every bench_*.py)")
    todo = scripts(ap.parse_args(argv).names)
    if not todo:
        print(f"smoke: no bench_*.py in {HERE}", file=sys.stderr)
        return 1
    results: list[tuple[str, str, float]] = []
    for script in todo:
        print(f"\n=== {script.name} --smoke", flush=True)
        t0 = time.perf_counter()
        if not accepts_smoke(script):
            outcome = "FAILED: no --smoke option in its --help"
        else:
            rc = run_smoke(script)
            outcome = "ok" if rc == 0 else f"FAILED: exit {rc}"
        results.append((script.name, outcome, time.perf_counter() - t0))
    print(f"\n{'benchmark':28}{'wall s':>9}  smoke run", flush=True)
    for name, outcome, seconds in results:
        print(f"{name:28}{seconds:9.1f}  {outcome}")
    failed = [name for name, outcome, _ in results if outcome != "ok"]
    print(f"total {sum(s for _, _, s in results):.1f} s")
    print(f"smoke: {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
