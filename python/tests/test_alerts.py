"""Alerts against real receivers on loopback: an SMTP server and a webhook server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from quantshift_ml.alerts import AlertConfig, notify, read_env_file
from quantshift_ml.cli import main


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], str]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.content.decode(errors="replace")))
        return "250 OK"


@pytest.fixture()
def smtp() -> Iterator[tuple[Inbox, int]]:
    import socket

    with socket.socket() as s:  # a free loopback port (the controller probes it by number)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield inbox, port
    finally:
        ctl.stop()


@pytest.fixture()
def webhook() -> Iterator[tuple[list[tuple[str, dict]], str]]:
    received: list[tuple[str, dict]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            status = 500 if self.path.startswith("/broken") else 204
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield received, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_email_slack_discord_receive_the_alert(smtp, webhook, tmp_path: Path) -> None:
    inbox, port = smtp
    received, url = webhook
    cfg = AlertConfig.from_env({
        "ADMIN_EMAIL": "ops@example.com", "SEND_EMAIL": "true", "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port), "SLACK_WEBHOOK_URL": f"{url}/slack/T000/SECRET1",
        "DISCORD_WEBHOOK_URL": f"{url}/discord/123/SECRET2"})
    res = notify(tmp_path, "train-success", "QuantShift model 20261124-020000 deployed",
                 "Test Accuracy: 0.950; top features atr_ratio, sma50_slope", cfg, host="primary")
    assert res["sent"] == ["email", "slack", "discord"] and not res["failed"]
    (_sender, rcpts, content), = inbox.messages
    assert rcpts == ["ops@example.com"]
    assert "QuantShift model 20261124-020000 deployed" in content and "atr_ratio" in content
    paths = {p.split("/")[1]: payload for p, payload in received}
    assert "Test Accuracy: 0.950" in paths["slack"]["text"]
    assert "primary" in paths["discord"]["content"]


def test_quiet_period_suppresses_the_same_warning(webhook, tmp_path: Path) -> None:
    received, url = webhook
    cfg = AlertConfig.from_env({"SLACK_WEBHOOK_URL": f"{url}/slack/x"})
    first = notify(tmp_path, "monitor", "WARNING on standby", "age 31 days", cfg, now=1000.0)
    again = notify(tmp_path, "monitor", "WARNING on standby", "age 31 days", cfg, now=2000.0)
    other = notify(tmp_path, "monitor", "CRITICAL on standby", "age 46 days", cfg, now=2000.0)
    later = notify(tmp_path, "monitor", "WARNING on standby", "age 31 days", cfg,
                   now=1000.0 + 13 * 3600)
    assert first["sent"] and again["suppressed"] and other["sent"] and later["sent"]
    assert len(received) == 3


def test_a_failing_channel_does_not_stop_the_others_and_secrets_stay_hidden(
        smtp, webhook, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    _inbox, port = smtp
    received, url = webhook
    env = tmp_path / "alerts.env"
    env.write_text(
        f"ADMIN_EMAIL=ops@example.com\nSEND_EMAIL=true\nSMTP_HOST=127.0.0.1\nSMTP_PORT={port}\n"
        "SMTP_USER=bot\nSMTP_PASSWORD='pw-TOPSECRET'\n"
        f"SLACK_WEBHOOK_URL={url}/broken/SLACKSECRET\nDISCORD_WEBHOOK_URL={url}/discord/ok\n")
    assert read_env_file(env)["SMTP_PASSWORD"] == "pw-TOPSECRET"
    code = main(["notify", "--root", str(tmp_path), "--env-file", str(env), "--json",
                 "--kind", "gate-refused", "--subject", "Deployment refused",
                 "--message", "floor 0.750, candidate 0.700"])
    out = capsys.readouterr()
    res = json.loads(out.out)
    assert code == 0  # discord got it
    assert res["sent"] == ["discord"] and set(res["failed"]) == {"email", "slack"}
    everything = out.out + out.err + caplog.text
    assert "TOPSECRET" not in everything and "SLACKSECRET" not in everything
    assert any("floor 0.750" in p["content"] for _, p in received if "content" in p)


def test_no_channel_is_a_quiet_no_op(tmp_path: Path) -> None:
    res = notify(tmp_path, "monitor", "x", "y", AlertConfig())
    assert res["channels"] == [] and res["sent"] == []
