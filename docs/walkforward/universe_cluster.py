"""The universe walk-forward on a Dask LocalCluster, compared with the local-process run.

Starts ``LocalCluster(n_workers=2, processes=True)``, runs the CLI's
``walkforward --universe FILE --scheduler ADDRESS --json`` against it and checks
that the summary equals docs/walkforward/universe.json (the ``--jobs 2`` run)
apart from ``seconds`` and ``ran_on``. Exit 0 when equal, 1 otherwise.

    python docs/walkforward/universe_cluster.py [/tmp/universe/universe.json]
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _comparable(summary: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in summary.items() if k not in ("seconds", "ok", "exit_code")}
    out["universe"] = {k: v for k, v in summary["universe"].items() if k != "ran_on"}
    out["markets"] = [{k: v for k, v in m.items() if k != "seconds"} for m in summary["markets"]]
    return out


def main() -> int:
    from dask.distributed import LocalCluster

    from quantshift_ml.cli import main as cli

    universe = sys.argv[1] if len(sys.argv) > 1 else "/tmp/universe/universe.json"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        started = time.monotonic()
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = cli(["walkforward", "--root", "/tmp/universe/root", "--universe", universe,
                        "--scheduler", cluster.scheduler_address, "--quiet", "--json"])
        wall = time.monotonic() - started
    if code != 0:
        print(buf.getvalue())
        return code
    got = json.loads(buf.getvalue())
    local = json.loads((HERE / "universe.json").read_text())
    same = _comparable(got) == _comparable(local)
    print(f"LocalCluster(2 processes): wall {wall:.1f} s, summary seconds {got['seconds']}; "
          f"local --jobs 2: summary seconds {local['seconds']}; "
          f"same summary apart from seconds: {same}")
    return 0 if same else 1


if __name__ == "__main__":  # the cluster's worker processes import this module
    sys.exit(main())
