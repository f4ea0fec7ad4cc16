"""Cost of explanations: ``/regime`` with and without ``explain=1`` (not a test).

Measures, on the default model (100 trees, depth 10, bundled S&P 500, trained into
a temporary root unless ``--root`` names one with an active model):

* ``RegimeService.regime`` in-process (the request path minus HTTP): plain, then
  with ``explain=True``; the first explained request is reported apart (it imports
  shap and loads the verified pickle once per served version);
* the HTTP round trip of ``GET /regime`` and ``GET /regime?explain=1`` on loopback.

Claim under test (issue 16): asking for an explanation costs only the requests that
ask; the plain path is unchanged (compare its p50 with ``bench_latency.py``'s).

``--smoke`` (``make bench-smoke``): 5 requests per series, to show it still works.

Usage: ``.venv/bin/python benchmarks/bench_explain.py [--quick | --smoke] [--json] [--root DIR]``.
Exit code 0 whatever the figures are; benchmarks report, tests decide.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench_latency import machine, percentiles

from quantshift_ml.data.sources import BundledSource
from quantshift_ml.ops import operations
from quantshift_ml.serving.service import RegimeService, build_server
from quantshift_ml.store import signing
from quantshift_ml.training.config import TrainConfig


def _calls(fn: Any, n: int) -> dict[str, float]:
    ns = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        ns.append(time.perf_counter_ns() - t)
    return percentiles(ns)


def measure(root: Path, n: int) -> dict[str, Any]:
    service = RegimeService(root, BundledSource(), "SPY")
    assert service.reload(), "no servable model in the root"
    service.warm()
    plain = _calls(lambda: service.regime("SPY"), n)
    t = time.perf_counter()
    service.regime("SPY", explain=True)
    first = time.perf_counter() - t
    explained = _calls(lambda: service.regime("SPY", explain=True), n)
    plain_after = _calls(lambda: service.regime("SPY"), n)
    server = build_server(service, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/regime"

    def get(url: str) -> None:
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read()

    try:
        http_plain = _calls(lambda: get(base), n)
        http_explained = _calls(lambda: get(base + "?explain=1"), n)
    finally:
        server.shutdown()
        server.server_close()
        service.predictions.close()
    return {"in_process": {"plain": plain, "explained": explained,
                           "plain_after_explaining": plain_after,
                           "first_explained_seconds": round(first, 3)},
            "http": {"plain": http_plain, "explained": http_explained}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="50 requests per series")
    mode.add_argument("--smoke", action="store_true", help="5 requests per series")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--root", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    n = 5 if args.smoke else 50 if args.quick else 300
    with tempfile.TemporaryDirectory(prefix="qs-bench-") as tmp:
        root = args.root
        if root is None:
            signing.generate(Path(tmp) / "keys")
            os.environ[signing.KEYS_ENV] = str(Path(tmp) / "keys")
            root = Path(tmp) / "root"
            operations.train(BundledSource(), root=root, config=TrainConfig(families=("forest",)),
                             promote=True)  # SHAP explains the forest
        result = {"machine": machine(), "requests_per_series": n, **measure(root, n)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{n} requests per series; first explained request "
          f"{result['in_process']['first_explained_seconds']} s (imports shap, loads the forest)")
    for where in ("in_process", "http"):
        for name, s in result[where].items():
            if isinstance(s, dict):
                print(f"{where:<11}{name:<24} p50 {s['p50_us']:9.1f} us  p99 {s['p99_us']:9.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
