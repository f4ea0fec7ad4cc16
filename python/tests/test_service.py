"""The regime service over real HTTP on loopback."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from quantshift_ml import operations, predlog
from quantshift_ml.data import BundledSource
from quantshift_ml.service import RegimeService, make_handler

from .conftest import FAST


@pytest.fixture()
def running(tmp_path: Path) -> Iterator[tuple[RegimeService, str]]:
    service = RegimeService(tmp_path, BundledSource(), "SPY")
    service.reload()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(service))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield service, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_unhealthy_until_a_verified_model_is_loaded(running, tmp_path: Path) -> None:
    service, url = running
    code, body = _get(url + "/healthz")
    assert code == 503 and "cannot load" in json.loads(body)["error"]
    out = operations.train(BundledSource(), root=tmp_path, config=FAST, promote=True)
    assert service.reload()
    code, body = _get(url + "/healthz")
    health = json.loads(body)
    assert code == 200 and health["sha256"] == out["sha256"]
    assert health["version"] == out["version"]


def test_regime_metrics_and_prediction_log(running, tmp_path: Path) -> None:
    service, url = running
    operations.train(BundledSource(), root=tmp_path, config=FAST, promote=True)
    service.reload()
    code, body = _get(url + "/regime?symbol=SPY")
    res = json.loads(body)
    assert code == 200 and res["as_of"] == "2018-12-31"
    assert res["regime"] in res["probabilities"]
    assert abs(sum(res["probabilities"].values()) - 1.0) < 1e-3
    logged = predlog.read(tmp_path)
    assert len(logged) == 1 and logged[0].regime == res["regime"]
    code, text = _get(url + "/metrics")
    assert code == 200
    for name in ("quantshift_prediction_latency_seconds_bucket", "quantshift_predictions_total",
                 "quantshift_model_age_seconds", "quantshift_model_holdout_accuracy",
                 "quantshift_model_info"):
        assert name in text, name
    assert _get(url + "/regime?symbol=QQQ")[0] == 404


def test_tampered_model_is_refused_and_previous_kept_on_reload(running, tmp_path: Path) -> None:
    service, url = running
    first = operations.train(BundledSource(), root=tmp_path, config=FAST, promote=True)
    service.reload()
    pkl = tmp_path / "models/regime_classifier.pkl"
    data = bytearray(pkl.read_bytes())
    data[200] ^= 0xFF
    pkl.write_bytes(bytes(data))
    assert not service.reload()
    code, body = _get(url + "/healthz")
    health = json.loads(body)
    # still serving the verified model it had, and saying the reload failed
    assert code == 200 and health["sha256"] == first["sha256"]
    assert "does not match" in health["last_reload_error"]
    fresh = RegimeService(tmp_path, BundledSource(), "SPY")
    assert not fresh.reload()
    assert fresh.health()[0] == 503


def test_unloadable_bundle_is_unhealthy(tmp_path: Path) -> None:
    out = operations.train(BundledSource(), root=tmp_path, config=FAST, promote=True)
    pkl = tmp_path / "models/regime_classifier.pkl"
    pkl.write_bytes(b"cnonexistent_quantshift_module\nBroken\n(tR.")
    meta_path = tmp_path / "models/regime_classifier.json"
    meta = json.loads(meta_path.read_text())
    import hashlib

    meta["sha256"] = hashlib.sha256(pkl.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    service = RegimeService(tmp_path, BundledSource(), "SPY")
    assert not service.reload()
    code, body = service.health()
    assert code == 503 and "ModuleNotFoundError" in body["error"]
    assert out["sha256"] != meta["sha256"]


def test_sighup_reloads_without_restart(tmp_path: Path) -> None:
    import signal
    import socket
    import subprocess
    import sys
    import time

    first = operations.train(BundledSource(), root=tmp_path, config=FAST, promote=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "quantshift_ml", "serve", "--root",
                             str(tmp_path), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/healthz"

    def sha(timeout: float = 30.0) -> str | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                code, body = _get(url)
                if code == 200:
                    return json.loads(body)["sha256"]
            except OSError:
                pass
            time.sleep(0.2)
        return None

    try:
        assert sha() == first["sha256"]
        second = operations.train(BundledSource(), root=tmp_path, config=FAST, promote=True,
                                  as_of="2018-11-30")
        proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + 30
        while sha() != second["sha256"] and time.monotonic() < end:
            time.sleep(0.2)
        assert sha() == second["sha256"]
        assert proc.poll() is None  # same process: reloaded, not restarted
    finally:
        proc.terminate()
        proc.wait(timeout=10)
