"""The rollout's health wait against a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from quantshift_ml.serving.healthcheck import ServiceNotServing, fetch_health, wait_for_sha

NEW = "b" * 64
OLD = "a" * 64


class Script:
    """Answers served in order; the last one repeats."""

    def __init__(self, answers: list[tuple[int, object]]) -> None:
        self.answers = answers
        self.calls = 0

    def next(self) -> tuple[int, object]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return answer


@pytest.fixture
def serve() -> Iterator[Callable[[Script], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(script: Script) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                assert self.path == "/healthz"
                status, body = script.next()
                raw = (json.dumps(body) if not isinstance(body, str) else body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_waits_through_unhealthy_and_old_model_until_the_release(
        serve: Callable[[Script], str]) -> None:
    script = Script([
        (503, {"status": "unhealthy", "error": "not loaded yet"}),
        (200, {"status": "ok", "sha256": OLD, "version": "old"}),
        (200, {"status": "ok", "sha256": NEW, "version": "new"}),
    ])
    body = wait_for_sha(serve(script), NEW, timeout=10, interval=0.01)
    assert body["sha256"] == NEW and body["version"] == "new"
    assert body["attempts"] == 3 == script.calls


def test_timeout_names_the_services_last_answer(serve: Callable[[Script], str]) -> None:
    script = Script([(503, {"status": "unhealthy",
                            "error": "cannot load the active model: IntegrityError: tampered"})])
    with pytest.raises(ServiceNotServing) as exc:
        wait_for_sha(serve(script), NEW, timeout=0.3, interval=0.05)
    msg = str(exc.value)
    assert "did not report sha256 bbbbbbbbbbbb" in msg
    assert "HTTP 503" in msg and "IntegrityError: tampered" in msg
    assert script.calls >= 2


def test_a_service_still_on_the_old_model_is_not_accepted(serve: Callable[[Script], str]) -> None:
    script = Script([(200, {"status": "ok", "sha256": OLD, "version": "old"})])
    with pytest.raises(ServiceNotServing, match=r"serving old \(sha256 aaaaaaaaaaaa"):
        wait_for_sha(serve(script), NEW, timeout=0.2, interval=0.05)


def test_healthy_status_is_required_even_with_the_right_sha(serve: Callable[[Script], str]) -> None:
    script = Script([(200, {"status": "degraded", "sha256": NEW})])
    with pytest.raises(ServiceNotServing):
        wait_for_sha(serve(script), NEW, timeout=0.2, interval=0.05)


def test_no_listener_is_reported_as_no_answer() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, body = fetch_health(f"http://127.0.0.1:{port}")
    assert status is None and "no answer from" in str(body)
    with pytest.raises(ServiceNotServing, match="no answer from"):
        wait_for_sha(f"http://127.0.0.1:{port}", NEW, timeout=0.1, interval=0.05)


def test_non_json_body_is_shown_truncated(serve: Callable[[Script], str]) -> None:
    status, body = fetch_health(serve(Script([(502, "<html>bad gateway</html>")])))
    assert status == 502 and body == "<html>bad gateway</html>"


def test_deadline_uses_the_clock_not_the_attempt_count() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    with pytest.raises(ServiceNotServing, match="within 1 s"):
        wait_for_sha("http://127.0.0.1:9", NEW, timeout=1, interval=0.4,
                     clock=lambda: now[0], sleep=sleep, request_timeout=0.05)
    assert slept == [0.4, 0.4, pytest.approx(0.2)]
    with pytest.raises(ValueError):
        wait_for_sha("http://127.0.0.1:9", "", timeout=1)
