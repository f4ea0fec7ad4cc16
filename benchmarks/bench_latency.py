"""Latency of one-row regime detection: scikit-learn vs compiled ONNX, plus HTTP.

Not a test: prints p50/p99 (microseconds) side by side in one run, the ratio,
and the verdict against the goal (compiled p99 <= 100 us). Usage:

    .venv/bin/python benchmarks/bench_latency.py [--rows 300] [--http 300]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import urllib.request
import warnings
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np

from quantshift_ml import operations
from quantshift_ml.data import BundledSource
from quantshift_ml.features import compute_features, usable
from quantshift_ml.service import RegimeService, make_handler

GOAL_P99_US = 100.0


def _pct(samples: list[float]) -> tuple[float, float]:
    arr = np.asarray(samples) * 1e6
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=300, help="scikit-learn iterations")
    ap.add_argument("--onnx-rows", type=int, default=5000, help="ONNX iterations")
    ap.add_argument("--http", type=int, default=300, help="HTTP requests to /regime")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        operations.train(BundledSource(), root=root, promote=True)  # the default config
        service = RegimeService(root, BundledSource(), "SPY")
        assert service.reload()
        cur, _ = service.holder.get()
        assert cur is not None and cur.compiled is not None, cur and cur.engine_note
        feats = compute_features(BundledSource().load())
        row = feats[usable(feats)].iloc[[-1]]
        sk_bundle = {**cur.bundle}
        from quantshift_ml.training.model import predict, predict_proba

        def sk_once() -> None:
            predict(sk_bundle, row)
            predict_proba(sk_bundle, row)

        x = row[cur.bundle["features"]].to_numpy(dtype=float)
        results = {}
        for name, fn, n in (("scikit-learn", sk_once, args.rows),
                            ("onnxruntime", lambda: cur.compiled.run(x), args.onnx_rows)):
            for _ in range(min(20, n)):
                fn()  # warm-up
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
            results[name] = _pct(samples)

        server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(service))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/regime?symbol=SPY"
        try:
            urllib.request.urlopen(url, timeout=30).read()  # warm the market cache
            samples = []
            for _ in range(args.http):  # bounded, loopback only
                t0 = time.perf_counter()
                with urllib.request.urlopen(url, timeout=10) as resp:
                    resp.read()
                samples.append(time.perf_counter() - t0)
            results["HTTP /regime (loopback)"] = _pct(samples)
        finally:
            server.shutdown()
            server.server_close()

    print(f"{'one-row regime detection':28}{'p50 us':>12}{'p99 us':>12}")
    for name, (p50, p99) in results.items():
        print(f"{name:28}{p50:12.1f}{p99:12.1f}")
    sk, ox = results["scikit-learn"], results["onnxruntime"]
    print(f"speed-up p50 {sk[0] / ox[0]:.0f}x, p99 {sk[1] / ox[1]:.0f}x; "
          f"compiled p99 {ox[1]:.1f} us vs goal {GOAL_P99_US:.0f} us: "
          f"{'PASS' if ox[1] <= GOAL_P99_US else 'MISS'}")
    print(f"samples: scikit-learn {args.rows}, onnxruntime {args.onnx_rows}, HTTP {args.http}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
