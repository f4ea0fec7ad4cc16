"""The service's HTTP front under load (issue 30): keep-alive, concurrency, a real
listen backlog, explanations that hold nobody up, a graceful SIGTERM, batched
prediction-log writes. Loopback only (127.0.0.1, port 0); no timed assertions."""

from __future__ import annotations

import errno
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quantshift_ml.data import BundledSource
from quantshift_ml.ops import operations
from quantshift_ml.serving import predlog
from quantshift_ml.serving.service import PredictionWriter, RegimeService, build_server

from .conftest import FAST, OPEN
from .test_service import _wait_for

REGIME = "/regime?symbol=SPY"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("http-root")
    out = operations.train(BundledSource(), root=root, config=FAST, gate=OPEN, promote=True)
    return root, out


@pytest.fixture()
def served(trained: tuple[Path, dict[str, Any]]) -> Iterator[tuple[RegimeService, int]]:
    root, _ = trained
    service = RegimeService(root, BundledSource(), "SPY")
    assert service.reload()
    service.warm()
    server = build_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield service, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        service.predictions.close()
        thread.join(timeout=30)


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp, resp.read()


def test_keep_alive_answers_several_requests_on_one_http11_connection(served) -> None:
    _, port = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        resp, body = _get(conn, REGIME)
        assert resp.status == 200 and resp.version == 11, resp.version
        assert conn.sock is not None  # the server did not close it
        local = conn.sock.getsockname()
        for path in (REGIME, "/healthz", "/metrics", REGIME, "/nothing"):
            resp, body = _get(conn, path)
            assert resp.version == 11 and not resp.will_close, path
            assert conn.sock is not None and conn.sock.getsockname() == local, path
        assert resp.status == 404 and "no such endpoint" in json.loads(body)["error"]
        assert resp.getheader("Cache-Control") == "no-store"
    finally:
        conn.close()


def test_concurrent_keep_alive_clients_all_answered_and_every_answer_logged(
        served, trained) -> None:
    service, port = served
    root, out = trained
    before = len(predlog.read(root))
    clients, each = 12, 25
    results: list[tuple[int, str, int]] = []  # (status, model version, connections used)
    errors: list[BaseException] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        socks = set()
        try:
            for _ in range(each):
                resp, body = _get(conn, REGIME)
                socks.add(id(conn.sock))
                results.append((resp.status, json.loads(body)["model_version"], 0))
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()
            results.append((0, "", len(socks)))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    answers = [r for r in results if r[0]]
    assert len(answers) == clients * each
    assert {(s, v) for s, v, _ in answers} == {(200, out["version"])}
    assert [c for s, _, c in results if not s] == [1] * clients  # one connection each
    service.predictions.flush()
    assert len(predlog.read(root)) - before == clients * each


def test_backlog_holds_200_simultaneous_connections_before_any_accept(trained) -> None:
    """The kernel completes a connection only while the listen backlog has room: with
    the old backlog of 5, the rest would wait for SYN retransmits (1 s, 3 s, ...)."""
    root, _ = trained
    service = RegimeService(root, BundledSource(), "SPY")
    assert service.reload()
    server = build_server(service, "127.0.0.1", 0)  # listening, nothing accepts yet
    port = server.server_address[1]
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(200)]
    thread = None
    try:
        for s in socks:
            s.setblocking(False)
            assert s.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
        pending = set(socks)
        for _ in range(50):  # bounded: at most 50 polls of 0.2 s
            _, writable, _ = select.select([], list(pending), [], 0.2)
            pending -= {s for s in writable if s.getsockopt(socket.SOL_SOCKET,
                                                            socket.SO_ERROR) == 0}
            if not pending:
                break
        assert not pending, f"{len(pending)} of 200 connections never completed"
        # and once the server runs, each of them gets its answer
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        for s in socks:
            s.setblocking(True)
            s.settimeout(60)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for s in socks:
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 "), data[:80]
    finally:
        for s in socks:
            s.close()
        if thread is not None:
            server.shutdown()
        server.server_close()
        service.predictions.close()


def test_an_explanation_in_progress_holds_up_no_other_request(served, monkeypatch) -> None:
    service, port = served
    entered, release = threading.Event(), threading.Event()
    real = service.explainer.explain

    def slow_explain(*args: Any, **kwargs: Any) -> dict[str, Any]:
        entered.set()
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(service.explainer, "explain", slow_explain)
    answer: list[tuple[int, dict[str, Any]]] = []

    def explain() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        resp, body = _get(conn, REGIME + "&explain=1")
        answer.append((resp.status, json.loads(body)))
        conn.close()

    thread = threading.Thread(target=explain)
    thread.start()
    try:
        assert entered.wait(60)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for path in (REGIME, "/healthz", "/metrics", REGIME):
            assert _get(conn, path)[0].status == 200, path
        conn.close()
        assert not answer  # the explanation is still being computed meanwhile
    finally:
        release.set()
        thread.join(timeout=120)
    assert answer and answer[0][0] == 200 and "explanation" in answer[0][1]


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _open_writer(fifo: Path, within_s: float) -> int:
    """The FIFO's write end once a reader has it open (ENXIO after ``within_s``)."""
    end = time.monotonic() + within_s
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > end:
                raise
            time.sleep(0.05)


def test_sigterm_lets_the_request_in_flight_finish_and_writes_the_prediction_log(
        trained, tmp_path: Path, yahoo_csv: Path) -> None:
    """The market data come through a FIFO that is written only after SIGTERM, so the
    first /regime is provably in flight (waiting for its bars) when the signal lands."""
    root = tmp_path / "root"
    operations.train(BundledSource(), root=root, config=FAST, gate=OPEN, promote=True)
    fifo = tmp_path / "bars.csv"
    os.mkfifo(fifo)
    ready = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ready.bind(str(tmp_path / "notify"))
    ready.settimeout(120)
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantshift_ml", "serve", "--root", str(root), "--host",
         "127.0.0.1", "--port", "0", "--source", "csv", "--data", str(fifo), "--symbol", "SPY"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "NOTIFY_SOCKET": str(tmp_path / "notify")})
    try:
        assert ready.recv(64) == b"READY=1"
        assert proc.stderr is not None
        url = next((line.split("listening on ", 1)[1].split()[0] for line in proc.stderr
                    if "listening on " in line), "")
        port = int(url.rsplit(":", 1)[1])
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        threads = _threads(proc.pid)
        answer: list[Any] = []

        def regime() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            try:
                resp, body = _get(conn, REGIME)
                answer.append((resp.status, json.loads(body)))
            except Exception as exc:
                answer.append(exc)

        thread = threading.Thread(target=regime)
        thread.start()
        # received: the server started a thread for it (the one waiting for the bars)
        assert _wait_for(lambda: _threads(proc.pid) > threads)
        proc.send_signal(signal.SIGTERM)
        # the bars arrive after the signal (ENXIO, not a hang, if nobody reads any more;
        # the reader may still be on its way: pandas is imported after READY=1)
        fd = _open_writer(fifo, within_s=30.0)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "w") as feed:
            feed.write(yahoo_csv.read_text())
        thread.join(timeout=120)
        assert proc.wait(timeout=60) == 0
        assert answer and answer[0][0] == 200, answer
        assert answer[0][1]["as_of"] == "2018-12-31"
        assert [p.bar_date for p in predlog.read(root)] == ["2018-12-31"]
    finally:
        ready.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_writer_logs_what_is_queued_in_few_transactions_in_order(tmp_path: Path,
                                                                 monkeypatch) -> None:
    calls: list[int] = []
    real = predlog.append_many

    def counting(root: Path, batch: Any) -> None:
        calls.append(len(batch))
        real(root, batch)

    monkeypatch.setattr(predlog, "append_many", counting)
    writer = PredictionWriter(tmp_path)
    for i in range(500):
        writer.put(predlog.Prediction(ts=f"t{i:04d}", symbol="SPY", bar_date="2018-12-31",
                                      regime="Bull", probabilities={"Bull": 1.0},
                                      model_version="v"))
    writer.close()
    assert [p.ts for p in predlog.read(tmp_path)] == [f"t{i:04d}" for i in range(500)]
    assert sum(calls) == 500 and len(calls) < 50, calls
