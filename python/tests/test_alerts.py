"""Alerts against real receivers on loopback: an SMTP server and a webhook server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from quantshift_ml.cli.dispatch import main
from quantshift_ml.monitoring.alerts import AlertConfig, exit_code, notify, read_env_file


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
    assert code in (0, 1)  # which one: test_partial_failure_exits_1
    assert res["sent"] == ["discord"] and set(res["failed"]) == {"email", "slack"}
    everything = out.out + out.err + caplog.text
    assert "TOPSECRET" not in everything and "SLACKSECRET" not in everything
    assert any("floor 0.750" in p["content"] for _, p in received if "content" in p)


def test_no_channel_is_a_quiet_no_op(tmp_path: Path) -> None:
    res = notify(tmp_path, "monitor", "x", "y", AlertConfig())
    assert res["channels"] == [] and res["sent"] == []


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as an internal relay would have."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "relay.pem", tmp_path / "relay.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture()
def tls_smtp(tmp_path: Path) -> Iterator[tuple[Inbox, int, Path, list[str]]]:
    """An SMTP relay that requires STARTTLS before AUTH, with one valid login."""
    import socket
    import ssl

    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert_file, key_file = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    logins: list[str] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"bot"
              and auth_data.password == b"pw-TOPSECRET")
        if ok:
            logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)  # the server answers 535 itself

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=context,
                     require_starttls=True, authenticator=authenticator,
                     auth_required=True, auth_require_tls=True)
    ctl.start()
    try:
        yield inbox, port, cert_file, logins
    finally:
        ctl.stop()


def test_email_over_starttls_with_auth(tls_smtp, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    inbox, port, ca_file, logins = tls_smtp
    base = {"ADMIN_EMAIL": "ops@example.com", "SEND_EMAIL": "true", "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(port), "SMTP_USER": "bot", "SMTP_PASSWORD": "pw-TOPSECRET",
            "SMTP_STARTTLS": "true", "SMTP_CA_FILE": str(ca_file)}
    res = notify(tmp_path, "gate-refused", "Deployment refused", "floor 0.750, candidate 0.700",
                 AlertConfig.from_env(base), host="primary")
    assert res["sent"] == ["email"], res
    assert logins == ["bot"]
    (_sender, rcpts, content), = inbox.messages
    assert rcpts == ["ops@example.com"] and "floor 0.750, candidate 0.700" in content

    # The certificate is verified: without the relay's CA the channel fails cleanly.
    untrusted = notify(tmp_path, "gate-refused", "Deployment refused (2)", "x",
                       AlertConfig.from_env({**base, "SMTP_CA_FILE": ""}), host="primary")
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted["failed"]["email"]
    # A wrong password is an authentication failure, reported without the secret.
    wrong = notify(tmp_path, "gate-refused", "Deployment refused (3)", "x",
                   AlertConfig.from_env({**base, "SMTP_PASSWORD": "pw-WRONG-SECRET"}),
                   host="primary")
    assert "SMTPAuthenticationError" in wrong["failed"]["email"]
    assert "WRONG-SECRET" not in json.dumps(wrong) + caplog.text
    assert len(inbox.messages) == 1


def test_auth_without_tls_to_a_remote_relay_is_refused(tmp_path: Path) -> None:
    cfg = AlertConfig.from_env({"ADMIN_EMAIL": "ops@example.com", "SEND_EMAIL": "true",
                                "SMTP_HOST": "127.0.0.2", "SMTP_PORT": "25",
                                "SMTP_USER": "bot", "SMTP_PASSWORD": "pw-TOPSECRET"})
    res = notify(tmp_path, "monitor", "x", "y", cfg, host="primary")
    assert "STARTTLS is off" in res["failed"]["email"]
    assert "TOPSECRET" not in json.dumps(res)


# ---- issue 12 item 10: a bad channel is one line, names itself, and leaks nothing ----
TOKEN = "T0KEN-S3CRET"


def _closed_port() -> int:
    """A loopback port nothing listens on: a channel that is down."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _notify_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                *extra: str) -> tuple[int, dict, str]:
    code = main(["notify", "--root", str(tmp_path), "--json", "--kind", "monitor",
                 "--subject", "CRITICAL on standby", "--message", "live accuracy 0.100",
                 *extra])
    out = capsys.readouterr()
    return code, json.loads(out.out.strip().splitlines()[-1]), out.out + out.err


@pytest.mark.parametrize("bad", [
    f"/slack/{TOKEN[:5]} {TOKEN[5:]}",       # a space pasted into the value
    f"/slack/{TOKEN[:5]}\n{TOKEN[5:]}",      # a vault value split over two lines
    f"/slack/{TOKEN}\n",                     # a trailing newline
    f"/slack/{TOKEN}\x7f",                   # a control character
])
def test_a_malformed_webhook_url_fails_its_channel_in_one_line_and_the_next_one_sends(
        webhook, tmp_path: Path, bad: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    received, url = webhook
    monkeypatch.setenv("SLACK_WEBHOOK_URL", url + bad)
    monkeypatch.setenv("DISCORD_WEBHOOK_URL", f"{url}/discord/{TOKEN}-2")
    _code, res, text = _notify_cli(capsys, tmp_path)
    assert res["sent"] == ["discord"] and list(res["failed"]) == ["slack"]
    assert "SLACK_WEBHOOK_URL contains whitespace or a control character" in res["failed"]["slack"]
    assert "\n" not in res["failed"]["slack"]
    assert [p for p, _ in received] == [f"/discord/{TOKEN}-2"]
    warnings = [r.getMessage() for r in caplog.records if "alert channel" in r.getMessage()]
    assert warnings == [f"alert channel slack failed: {res['failed']['slack']}"]
    everything = text + caplog.text
    assert "Traceback" not in everything
    assert TOKEN[:5] not in everything and TOKEN[5:] not in everything


def test_an_unreachable_channel_does_not_stop_a_working_one(
        webhook, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    received, url = webhook
    cfg = AlertConfig.from_env({
        "SLACK_WEBHOOK_URL": f"http://127.0.0.1:{_closed_port()}/slack/{TOKEN}",
        "DISCORD_WEBHOOK_URL": f"{url}/discord/{TOKEN}-2"})
    res = notify(tmp_path, "monitor", "CRITICAL on standby", "x", cfg, host="standby")
    assert res["sent"] == ["discord"] and res["ok"] is False
    assert res["failed"]["slack"].startswith("URLError: ")
    assert "refused" in res["failed"]["slack"].lower()
    assert len(received) == 1 and exit_code(res) == 1
    assert TOKEN not in json.dumps(res) + caplog.text


def test_bad_settings_fail_only_their_channel_without_a_traceback(
        webhook, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    received, _url = webhook
    cfg = AlertConfig.from_env({
        "ADMIN_EMAIL": "ops@example.com", "SEND_EMAIL": "true", "SMTP_PORT": "25x",
        "SMTP_PASSWORD": "pw-TOPSECRET", "ALERT_QUIET_HOURS": "twelve",
        "SLACK_WEBHOOK_URL": f"hooks.slack.com/services/{TOKEN}",        # no scheme
        "DISCORD_WEBHOOK_URL": f"http://127.0.0.1:http/discord/{TOKEN}",  # port not a number
    })
    assert cfg.quiet_hours == 12.0 and "ALERT_QUIET_HOURS" in caplog.text
    res = notify(tmp_path, "monitor", "x", "y", cfg, host="h")
    assert res["sent"] == [] and not received
    assert res["failed"] == {
        "email": "SMTP_PORT '25x' is not a port number (1-65535)",
        "slack": "SLACK_WEBHOOK_URL is not an http(s) URL with a host",
        "discord": "DISCORD_WEBHOOK_URL has a port that is not a number (1-65535)"}
    assert TOKEN not in caplog.text and "TOPSECRET" not in caplog.text


def test_a_webhook_token_is_not_sent_in_clear_text_to_a_remote_host(tmp_path: Path) -> None:
    cfg = AlertConfig.from_env({"SLACK_WEBHOOK_URL": f"http://192.0.2.1/services/{TOKEN}"})
    res = notify(tmp_path, "monitor", "x", "y", cfg, host="h")  # refused before connecting
    assert "must be https://" in res["failed"]["slack"] and TOKEN not in json.dumps(res)


def test_errors_that_quote_parts_of_the_url_are_redacted() -> None:
    from http.client import InvalidURL

    from quantshift_ml.monitoring.alerts import failure_reason

    cfg = AlertConfig(slack_url=f"https://bot:{TOKEN}@hooks.example/services/B0/{TOKEN}-2?x=1",
                      smtp_password="pw-TOPSECRET")
    for exc in (InvalidURL(f"URL can't contain control characters. '/services/B0/{TOKEN}-2'"),
                ValueError(f"unknown url type: {cfg.slack_url!r}"),
                OSError(f"auth failed for {TOKEN} / pw-TOPSECRET")):
        text = failure_reason(exc, cfg.secrets)
        assert TOKEN not in text and "TOPSECRET" not in text, text
        assert text.startswith(type(exc).__name__)


def test_a_broken_quote_in_the_env_file_is_one_line_naming_the_line_not_the_value(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = tmp_path / "alerts.env"
    env.write_text(f"ADMIN_EMAIL=ops@example.com\nSLACK_WEBHOOK_URL='https://h/{TOKEN[:5]}\n"
                   f"{TOKEN[5:]}'\n")
    code = main(["notify", "--root", str(tmp_path), "--env-file", str(env), "--kind", "monitor",
                 "--subject", "s"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        f"quantshift-ml: error: {env}:2: SLACK_WEBHOOK_URL: No closing quotation"]
    assert TOKEN[:5] not in err and TOKEN[5:] not in err


def test_exit_code_is_1_when_any_channel_failed() -> None:
    base = {"channels": ["slack", "discord"], "sent": ["discord"], "suppressed": False}
    assert exit_code({**base, "failed": {"slack": "URLError: refused"}}) == 1
    assert exit_code({**base, "failed": {}}) == 0
    assert exit_code({"channels": [], "sent": [], "failed": {}, "suppressed": False}) == 0
    assert exit_code({**base, "sent": [], "failed": {}, "suppressed": True}) == 0


def test_partial_failure_exits_1(webhook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    _received, url = webhook
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{url}/broken/{TOKEN}")
    monkeypatch.setenv("DISCORD_WEBHOOK_URL", f"{url}/discord/{TOKEN}")
    code, res, _text = _notify_cli(capsys, tmp_path)
    assert res["sent"] == ["discord"] and list(res["failed"]) == ["slack"]
    assert code == 1 and res["ok"] is False
