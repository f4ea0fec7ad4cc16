"""The regime service over real HTTP on loopback (127.0.0.1, port 0 only)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quantshift_ml.data import BundledSource
from quantshift_ml.ops import operations
from quantshift_ml.serving import predlog
from quantshift_ml.serving.service import RegimeService, build_server, install_signal_handlers

from .conftest import FAST, OPEN


@pytest.fixture()
def running(tmp_path: Path) -> Iterator[tuple[RegimeService, str]]:
    service = RegimeService(tmp_path, BundledSource(), "SPY")
    service.reload()
    server = build_server(service, "127.0.0.1", 0)
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


def _wait_for(cond: Callable[[], bool], timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_unhealthy_until_a_verified_model_is_loaded(running, tmp_path: Path) -> None:
    service, url = running
    code, body = _get(url + "/healthz")
    assert code == 503 and "cannot load" in json.loads(body)["error"]
    assert _get(url + "/regime?symbol=SPY")[0] == 503
    out = operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    assert service.reload()
    code, body = _get(url + "/healthz")
    health = json.loads(body)
    assert code == 200 and health["status"] == "ok"
    assert health["sha256"] == out["sha256"] and health["version"] == out["version"]
    assert health["loaded_at"] and health["engine"] in ("onnxruntime", "sklearn")
    assert health["engine_reason"]


def test_regime_metrics_and_prediction_log(running, tmp_path: Path) -> None:
    service, url = running
    out = operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    service.reload()
    code, body = _get(url + "/regime?symbol=SPY")
    res = json.loads(body)
    assert code == 200 and res["as_of"] == "2018-12-31"  # the bundled data's last bar
    assert res["model_version"] == out["version"] and res["symbol"] == "SPY"
    assert res["regime"] in res["probabilities"]
    assert res["regime"] == max(res["probabilities"], key=res["probabilities"].get)
    assert abs(sum(res["probabilities"].values()) - 1.0) < 1e-3
    assert res["inference_us"] > 0 and res["engine"] in ("onnxruntime", "sklearn")
    assert _get(url + "/regime")[0] == 200  # symbol defaults to the configured one
    service.predictions.flush()  # appended off the request path
    logged = predlog.read(tmp_path)
    assert len(logged) == 2 and logged[0].regime == res["regime"]
    assert logged[0].bar_date == "2018-12-31" and logged[0].model_version == out["version"]
    assert logged[0].probabilities == res["probabilities"]
    code, text = _get(url + "/metrics")
    assert code == 200
    for name in ("quantshift_prediction_latency_seconds_bucket", "quantshift_predictions_total",
                 "quantshift_model_age_seconds", "quantshift_model_holdout_accuracy",
                 "quantshift_model_info", "quantshift_model_loaded 1.0"):
        assert name in text, name
    assert f'version="{out["version"]}"' in text
    assert f'quantshift_predictions_total{{regime="{res["regime"]}"}} 2.0' in text
    assert _get(url + "/regime?symbol=QQQ")[0] == 404
    assert _get(url + "/nothing")[0] == 404


def test_tampered_model_is_refused_and_previous_kept_on_reload(
        running, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    service, url = running
    first = operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    service.reload()
    pkl = tmp_path / "models/regime_classifier.pkl"
    data = bytearray(pkl.read_bytes())
    data[200] ^= 0xFF
    pkl.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="quantshift_ml.serving.service"):
        assert not service.reload()
    assert "does not match metadata" in caplog.text  # the reason is logged
    code, body = _get(url + "/healthz")
    health = json.loads(body)
    # still serving the verified model it had, and saying the reload failed
    assert code == 200 and health["sha256"] == first["sha256"]
    assert "does not match" in health["last_reload_error"]
    # a fresh service never serves it
    fresh = RegimeService(tmp_path, BundledSource(), "SPY")
    assert not fresh.reload()
    code, body2 = fresh.health()
    assert code == 503 and "does not match" in body2["error"]
    assert fresh.regime("SPY")[0] == 503


def test_forged_pickle_with_matching_sha_is_unhealthy(tmp_path: Path) -> None:
    out = operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    pkl = tmp_path / "models/regime_classifier.pkl"
    pkl.write_bytes(b"cnonexistent_quantshift_module\nBroken\n(tR.")
    meta_path = tmp_path / "models/regime_classifier.json"
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = hashlib.sha256(pkl.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    service = RegimeService(tmp_path, BundledSource(), "SPY")
    assert not service.reload()
    code, body = service.health()
    assert code == 503 and "forged or altered" in body["error"]
    assert out["sha256"] != meta["sha256"]


def test_sighup_swaps_the_model_without_dropping_requests(running, tmp_path: Path) -> None:
    """SIGHUP to this very process (handler installed first), under steady traffic."""
    service, url = running
    first = operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True,
                             as_of="2018-11-30")
    assert service.reload()
    second = operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            code, body = _get(url + "/regime?symbol=SPY")
            statuses.append(code)
            if code == 200:
                versions.add(json.loads(body)["model_version"])

    restore = install_signal_handlers(service, stop=lambda: None)
    workers = [threading.Thread(target=traffic) for _ in range(2)]
    try:
        for w in workers:
            w.start()
        assert _wait_for(lambda: len(statuses) >= 5)
        os.kill(os.getpid(), signal.SIGHUP)
        assert _wait_for(lambda: service.health()[1].get("version") == second["version"])
        count = len(statuses)
        assert _wait_for(lambda: len(statuses) >= count + 5)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
        restore()
    assert set(statuses) == {200}, statuses
    assert versions == {first["version"], second["version"]}


def test_cli_serve_on_port_zero_reloads_on_sighup_and_stops_on_sigterm(tmp_path: Path) -> None:
    first = operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True,
                             as_of="2018-11-30")
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantshift_ml", "serve", "--root", str(tmp_path),
         "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:  # "listening on http://127.0.0.1:PORT (root ...)"
            if "listening on " in line:
                url = line.split("listening on ", 1)[1].split()[0]
                break
        assert url and url.startswith("http://127.0.0.1:")
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained

        def healthz() -> dict:
            return json.loads(_get(url + "/healthz")[1])

        assert healthz()["sha256"] == first["sha256"]
        second = operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN,
                                  promote=True)
        proc.send_signal(signal.SIGHUP)
        assert _wait_for(lambda: healthz()["sha256"] == second["sha256"])
        assert proc.poll() is None  # same process: reloaded, not restarted
        assert _get(url + "/regime?symbol=SPY")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        # the prediction queued before SIGTERM was written on the way out
        assert [p.model_version for p in predlog.read(tmp_path)] == [second["version"]]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_market_data_cached_refreshed_in_background_and_kept_on_failure(tmp_path: Path) -> None:
    class Flaky:
        name = "flaky"

        def __init__(self) -> None:
            self.calls, self.fail = 0, False
            self.slow = threading.Event()
            self.bars = BundledSource().load()

        def load(self):
            self.calls += 1
            self.slow.wait(30)  # the first load is not held back
            if self.fail:
                raise OSError("network down")
            return self.bars

        def describe(self) -> dict:
            return {"source": self.name}

    operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    source = Flaky()
    source.slow.set()
    service = RegimeService(tmp_path, source, "SPY", refresh_seconds=3600)
    assert service.reload()
    for _ in range(3):
        assert service.regime("SPY")[0] == 200
    assert source.calls == 1  # cached: one load for three requests
    # stale now, and the source hangs then fails: requests are answered meanwhile
    service.market.refresh_seconds = 0.0
    source.fail = True
    source.slow.clear()
    started = time.monotonic()
    code, body = service.regime("SPY")
    assert code == 200 and body["as_of"] == "2018-12-31"
    assert service.regime("SPY")[0] == 200
    assert time.monotonic() - started < 5
    assert _wait_for(lambda: source.calls == 2)
    assert service.regime("SPY")[0] == 200
    assert source.calls == 2  # one refresh in flight, not one per request
    source.slow.set()
    assert _wait_for(lambda: "network down" in (service.health()[1]["market"]["error"] or ""))
    assert service.regime("SPY")[1]["as_of"] == "2018-12-31"  # previous bars still served


def test_prediction_log_failure_does_not_fail_requests(running, tmp_path: Path) -> None:
    service, url = running
    operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    service.reload()
    predlog.db_path(tmp_path).mkdir(parents=True)  # a directory: sqlite cannot open it
    assert _get(url + "/regime?symbol=SPY")[0] == 200
    service.predictions.flush()
    assert "quantshift_prediction_log_errors_total 1.0" in _get(url + "/metrics")[1]


def test_notify_ready_tells_systemd(tmp_path, monkeypatch):
    """Type=notify: READY=1 on $NOTIFY_SOCKET (systemd then lets a queued reload through)."""
    import socket

    from quantshift_ml.serving.service.server import notify_ready

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify_ready() is False
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify_ready() is True
        assert sock.recv(64) == b"READY=1"
