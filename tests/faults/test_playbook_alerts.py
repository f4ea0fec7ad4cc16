"""Alerts from the playbooks, end to end: a refusal reaches a real webhook, not its secret.

Each host's ROOT/etc/alerts.env is written the way role quantshift_cron writes it
(the role itself is applied for real in test_secrets.py); the playbooks then run
with quantshift_alerts_enabled=true, and `playbooks/tasks/alert.yml` calls
`quantshift-ml notify` on the primary, which posts to a Slack-style webhook
served on loopback by this test. The webhook's path is the secret.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .conftest import HOSTS, Fleet

# a floor the candidate cannot reach: on a 2011 holdout (August's turbulence) no
# model scores 0.99, while the bundled data's last holdout is too easy (1.000)
REFUSE = ("-e", "quantshift_min_accuracy=0.99", "-e", "quantshift_as_of=2011-10-31")

TOKEN = "T0KEN-5ecret-77"


@pytest.fixture
def hook() -> Iterator[tuple[list[tuple[str, dict]], str]]:
    received: list[tuple[str, dict]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield received, f"http://127.0.0.1:{server.server_address[1]}/services/{TOKEN}"
    finally:
        server.shutdown()


def _configure(fleet: Fleet, url: str) -> None:
    for h in HOSTS:
        env = fleet.root(h) / "etc/alerts.env"
        env.parent.mkdir(parents=True, exist_ok=True)
        env.write_text(f"SLACK_WEBHOOK_URL={url}\nALERT_QUIET_HOURS=12\n")
        env.chmod(0o600)


@pytest.mark.parametrize(("playbook", "stopped", "head", "says"), [
    ("retrain.yml", "Retrain stopped", "*QuantShift retrain failed on primary*\n[gate-refused] ",
     ("Deployment refused", "floor 0.99")),
    ("rollback.yml", "Rollback refused",
     "*QuantShift rollback refused on primary*\n[rollback-refused] ",
     ("below the floor 0.99", "no host was changed")),
])
def test_a_refusal_posts_one_alert_with_the_numbers_and_changes_no_host(
        fleet: Fleet, hook, playbook: str, stopped: str, head: str, says: tuple[str, ...]) -> None:
    received, url = hook
    _configure(fleet, url)
    before = fleet.digest()
    run = fleet.play(playbook, "-v", *REFUSE,
                     "-e", "quantshift_alerts_enabled=true")
    assert run.rc != 0 and stopped in run.out
    assert fleet.digest() == before
    assert len(received) == 1, (received, run.out)
    path, body = received[0]
    assert path == f"/services/{TOKEN}"
    assert body["text"].startswith(head), body
    assert all(s in body["text"] for s in says), body
    assert TOKEN not in run.out


def test_alerts_disabled_posts_nothing(fleet: Fleet, hook) -> None:
    """inventory/local's default: the alert task is skipped, the webhook is never called."""
    received, url = hook
    _configure(fleet, url)
    run = fleet.play("retrain.yml", *REFUSE)
    assert run.rc != 0
    assert received == []


def test_a_rollback_inside_a_change_freeze_runs_and_posts_one_alert(fleet: Fleet, hook) -> None:
    """The emergency path is allowed inside a freeze, says so, and alerts once."""
    received, url = hook
    _configure(fleet, url)
    before = fleet.assert_one_version()
    run = fleet.play("rollback.yml", "-e", "quantshift_alerts_enabled=true",
                     "-e", "quantshift_freeze_enabled=true",
                     "-e", "quantshift_freeze_at=2026-11-30T15:00:00Z")
    assert run.rc == 0, run.out
    assert fleet.assert_one_version()["sha256"] != before["sha256"]  # it rolled back
    freeze = [body["text"] for _, body in received if "[freeze-rollback]" in body["text"]]
    assert len(freeze) == 1, (received, run.out)
    assert "XNYS session 2026-11-30" in freeze[0] and "2026-11-30T21:30:00+00:00" in freeze[0]
    assert TOKEN not in run.out
