"""One alert path for the monitor, the cron jobs and the playbooks.

Channels: email over SMTP (STARTTLS and auth), Slack and Discord incoming
webhooks, configured from the environment (the old runbook's ``ADMIN_EMAIL`` and
``SEND_EMAIL=true`` still work) or an env file written by the quantshift_cron
role with mode 0600. Every configured channel is tried: a failing or misconfigured
channel is reported by name in one line and does not stop the others; the same
alert is not re-sent within a quiet period. Secrets (SMTP password, webhook URLs,
whose path is the token) never appear in logs, results or error messages: a
webhook URL is checked before it reaches ``urllib`` (whose errors quote the URL's
path), and every failure text is redacted again before it is shown.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import logging
import shlex
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantshift_ml.errors import UsageError
from quantshift_ml.store.files import atomic_write_json

log = logging.getLogger(__name__)

KINDS = ("train-success", "train-failure", "gate-refused", "rollback-refused", "monitor",
         "freeze-override", "freeze-rollback", "ab-fallback")
DEFAULT_QUIET_HOURS = 12.0
_WEBHOOK_VARS = {"slack": "SLACK_WEBHOOK_URL", "discord": "DISCORD_WEBHOOK_URL"}


class ChannelError(Exception):
    """A channel that cannot send, with a message built to contain no secret."""


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (values may be shell-quoted), as the cron role writes them.

    A line that does not parse is a one-line usage error naming the file, line and
    key, never the value: the value may be a password.
    """
    out: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value) if value.strip() else [""]
        except ValueError as exc:  # "No closing quotation": the message holds no value
            raise UsageError(f"{path}:{number}: {key.strip()}: {exc}") from None
        out[key.strip()] = parts[0] if parts else ""
    return out


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _port(raw: str | None, problems: dict[str, str]) -> int:
    """SMTP_PORT as a number; a bad one fails the email channel only, not the alert."""
    text = (raw or "").strip() or "25"
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    problems["email"] = f"SMTP_PORT {text[:20]!r} is not a port number (1-65535)"
    return 25


def _hours(raw: str | None) -> float:
    """ALERT_QUIET_HOURS; a bad value keeps the default (with a warning) so alerts still go."""
    try:
        hours = float(raw) if raw else DEFAULT_QUIET_HOURS
    except ValueError:
        hours = -1.0
    if not 0 <= hours < float("inf"):
        log.warning("ALERT_QUIET_HOURS %r is not a number of hours >= 0; using %g",
                    (raw or "")[:20], DEFAULT_QUIET_HOURS)
        return DEFAULT_QUIET_HOURS
    return hours


@dataclass(frozen=True)
class AlertConfig:
    """Where alerts go. Built from the environment with ``from_env``."""

    email_to: str = ""
    send_email: bool = False
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_starttls: bool = False
    #: A private CA bundle for the SMTP server's certificate (internal relays);
    #: empty means the system trust store. Verification is never switched off.
    smtp_ca_file: str = ""
    email_from: str = ""
    slack_url: str = field(default="", repr=False)
    discord_url: str = field(default="", repr=False)
    quiet_hours: float = DEFAULT_QUIET_HOURS
    timeout: float = 10.0
    #: Settings that could not be read, per channel: that channel fails with the
    #: message (which holds no secret) and the others still send.
    problems: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AlertConfig:
        """The settings; never raises, so one bad variable cannot silence every channel."""
        problems: dict[str, str] = {}
        port = _port(env.get("SMTP_PORT"), problems)
        starttls = env.get("SMTP_STARTTLS")
        return cls(
            email_to=env.get("ADMIN_EMAIL", ""),
            send_email=_truthy(env.get("SEND_EMAIL")),
            smtp_host=env.get("SMTP_HOST") or "localhost",
            smtp_port=port,
            smtp_user=env.get("SMTP_USER", ""),
            smtp_password=env.get("SMTP_PASSWORD", ""),
            smtp_starttls=_truthy(starttls) if starttls else port == 587,
            smtp_ca_file=env.get("SMTP_CA_FILE", ""),
            email_from=env.get("ALERT_FROM") or f"quantshift@{socket.getfqdn()}",
            slack_url=env.get("SLACK_WEBHOOK_URL", ""),
            discord_url=env.get("DISCORD_WEBHOOK_URL", ""),
            quiet_hours=_hours(env.get("ALERT_QUIET_HOURS")),
            problems=problems,
        )

    @property
    def secrets(self) -> list[str]:
        """Every string to redact, longest first: whole URLs before their parts."""
        found = {self.smtp_password} if self.smtp_password else set()
        for url in (self.slack_url, self.discord_url):
            found |= _url_secrets(url)
        return sorted((s for s in found if s), key=len, reverse=True)

    def channels(self) -> list[str]:
        out = []
        if self.send_email and self.email_to:
            out.append("email")
        if self.slack_url:
            out.append("slack")
        if self.discord_url:
            out.append("discord")
        return out


def _url_secrets(url: str) -> set[str]:
    """A webhook URL and the parts of it an error message could quote.

    Slack's and Discord's tokens are path segments, and ``http.client`` quotes the
    path alone (``InvalidURL: URL can't contain control characters. '/T0/SECRET'``),
    so redacting the whole URL is not enough. Segments under 4 characters (``api``)
    are left alone: redacting them would garble the rest of the message.
    """
    if not url:
        return set()
    netloc, _, rest = url.split("://", 1)[-1].partition("/")
    parts = {url, url.strip(), rest, "/" + rest}
    if "@" in netloc:  # https://user:token@host/...
        parts |= set(netloc.rpartition("@")[0].split(":"))
    for piece in rest.replace("?", "/").replace("&", "/").replace("=", "/").split("/"):
        parts |= {piece, piece.strip()}
    parts |= {urllib.parse.quote(p, safe="/") for p in list(parts)}
    return {p for p in parts if len(p) >= 4}


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every secret (apply the longest first) replaced by ``***``."""
    for s in secrets:
        text = text.replace(s, "***")
    return text


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_webhook_url(var: str, url: str) -> None:
    """Refuse a URL ``urllib`` would choke on or that would send its token in clear text.

    The messages name the variable and the problem, never the URL: a pasted URL
    with a space or a line break (a vault value split over two lines) used to end
    in a traceback that printed its secret path.
    """
    bad = next((i for i, c in enumerate(url) if c.isspace() or ord(c) < 32 or ord(c) == 127),
               None)
    if bad is not None:
        raise ChannelError(f"{var} contains whitespace or a control character at "
                           f"position {bad} (a line break or space pasted into the value?)")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ChannelError(f"{var} is not an http(s) URL with a host")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise ChannelError(f"{var} has a port that is not a number (1-65535)") from None
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ChannelError(f"{var} must be https:// (the URL is the credential; "
                           "http:// only to a loopback address)")


def _send_email(cfg: AlertConfig, subject: str, body: str) -> None:
    import smtplib  # imported on use: every command imports this module, few send mail
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = cfg.email_from
    msg["To"] = cfg.email_to
    msg.set_content(body)
    if (cfg.smtp_user and not cfg.smtp_starttls
            and cfg.smtp_host not in ("localhost", "127.0.0.1", "::1")):
        # Refuse rather than send a password in clear text over the network.
        raise ChannelError(
            f"SMTP_USER is set but STARTTLS is off for {cfg.smtp_host}:{cfg.smtp_port}; "
            "set SMTP_STARTTLS=true (or use port 587)"
        )
    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout) as smtp:
        if cfg.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context(cafile=cfg.smtp_ca_file or None))
        if cfg.smtp_user:
            smtp.login(cfg.smtp_user, cfg.smtp_password)
        smtp.send_message(msg)


def _post_json(var: str, url: str, payload: dict[str, Any], timeout: float) -> None:
    check_webhook_url(var, url)
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "User-Agent": "quantshift-ml"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        if resp.status >= 300:
            raise ChannelError(f"HTTP {resp.status}")


def failure_reason(exc: BaseException, secrets: list[str]) -> str:
    """One line for a channel's failure: the error's type and text, secrets redacted.

    ``HTTPError`` is reduced to its status: its ``str`` is safe, but it carries the
    URL (``exc.url``, ``exc.filename``) and anything that formats it more fully
    would print the token.
    """
    if isinstance(exc, ChannelError):
        text = str(exc)
    elif isinstance(exc, urllib.error.HTTPError):
        text = f"HTTPError: HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = f"URLError: {exc.reason}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(redact(text, secrets).split())  # one line, whatever the server said


def _state_path(root: Path) -> Path:
    return Path(root) / "data" / "alerts-state.json"


def _digest(kind: str, host: str, subject: str, message: str) -> str:
    return hashlib.sha256(f"{kind}\0{host}\0{subject}\0{message}".encode()).hexdigest()[:16]


def _read_state(state_file: Path) -> dict[str, float]:
    """When each alert was last sent; an unreadable file only resets the quiet period."""
    if not state_file.exists():
        return {}
    try:
        return {k: float(v) for k, v in json.loads(state_file.read_text()).items()}
    except (ValueError, OSError, AttributeError, TypeError):
        return {}


def _send_all(cfg: AlertConfig, subject: str, body: str) -> tuple[list[str], dict[str, str]]:
    """Try every configured channel; (sent, failed: channel -> redacted one-line reason)."""
    text = f"*{subject}*\n{body}"
    senders = {
        "email": lambda: _send_email(cfg, subject, body),
        "slack": lambda: _post_json(_WEBHOOK_VARS["slack"], cfg.slack_url, {"text": text},
                                    cfg.timeout),
        "discord": lambda: _post_json(_WEBHOOK_VARS["discord"], cfg.discord_url,
                                      {"content": text[:1900]}, cfg.timeout),
    }
    sent: list[str] = []
    failed: dict[str, str] = {}
    for ch in cfg.channels():
        try:
            if ch in cfg.problems:
                raise ChannelError(cfg.problems[ch])
            senders[ch]()
            sent.append(ch)
        except Exception as exc:  # whatever one channel raises (InvalidURL...), try the next
            failed[ch] = failure_reason(exc, cfg.secrets)
            log.warning("alert channel %s failed: %s", ch, failed[ch])
    return sent, failed


def notify(root: Path, kind: str, subject: str, message: str, cfg: AlertConfig, *,
           host: str | None = None, now: float | None = None) -> dict[str, Any]:
    """Send one alert on every configured channel; JSON-native outcome, secrets redacted.

    ``ok`` is false when any channel failed (the others were still tried); use
    ``exit_code`` for the command's exit status.
    """
    host = host or socket.gethostname()
    now = time.time() if now is None else now
    channels = cfg.channels()
    result: dict[str, Any] = {"kind": kind, "host": host, "channels": channels, "sent": [],
                              "failed": {}, "suppressed": False, "ok": True}
    if not channels:
        log.info("no alert channel configured; alert not sent: %s", subject)
        return result
    key = _digest(kind, host, subject, message)
    state_file = _state_path(root)
    state = _read_state(state_file)
    last = state.get(key)
    if kind != "train-success" and last is not None and now - last < cfg.quiet_hours * 3600:
        result["suppressed"] = True
        log.info("alert suppressed (same alert sent %.1f h ago): %s", (now - last) / 3600,
                 subject)
        return result
    stamp = dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="seconds")
    body = f"[{kind}] {host} {stamp}\n\n{message}\n"
    result["sent"], result["failed"] = _send_all(cfg, subject, body)
    result["ok"] = not result["failed"]
    if result["sent"]:
        state[key] = now
        state = {k: v for k, v in state.items() if now - v < 7 * 86400}
        try:
            atomic_write_json(state_file, state)
        except OSError as exc:
            log.warning("could not record the alert quiet period: %s", exc)
    return result


def exit_code(result: Mapping[str, Any]) -> int:
    """``notify``'s exit status: 1 when any configured channel failed, else 0.

    A partial failure is a failure: an operator whose Slack works and whose email
    has been broken for weeks should learn it from cron, not from a missed alert.
    Suppressed (quiet period) and "no channel configured" are not failures.
    """
    return 1 if result.get("failed") else 0
