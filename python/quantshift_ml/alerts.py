"""One alert path for the monitor, the cron jobs and the playbooks.

Channels: email over SMTP (STARTTLS and auth), Slack and Discord incoming
webhooks, configured from the environment (the old runbook's ``ADMIN_EMAIL`` and
``SEND_EMAIL=true`` still work) or an env file written by the quantshift_cron
role with mode 0600. A failing channel is logged and does not stop the others;
the same alert is not re-sent within a quiet period. Secrets (SMTP password,
webhook URLs) never appear in logs, results or error messages.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shlex
import smtplib
import socket
import ssl
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from quantshift_ml.store.files import atomic_write_json

log = logging.getLogger(__name__)

KINDS = ("train-success", "train-failure", "gate-refused", "rollback-refused", "monitor")
DEFAULT_QUIET_HOURS = 12.0


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (values may be shell-quoted), as the cron role writes them."""
    out: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        parts = shlex.split(value) if value.strip() else [""]
        out[key.strip()] = parts[0] if parts else ""
    return out


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


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

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AlertConfig:
        port = int(env.get("SMTP_PORT") or 25)
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
            quiet_hours=float(env.get("ALERT_QUIET_HOURS") or DEFAULT_QUIET_HOURS),
        )

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.smtp_password, self.slack_url, self.discord_url) if s]

    def channels(self) -> list[str]:
        out = []
        if self.send_email and self.email_to:
            out.append("email")
        if self.slack_url:
            out.append("slack")
        if self.discord_url:
            out.append("discord")
        return out


def redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        text = text.replace(s, "***")
    return text


def _send_email(cfg: AlertConfig, subject: str, body: str) -> None:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = cfg.email_from
    msg["To"] = cfg.email_to
    msg.set_content(body)
    if (cfg.smtp_user and not cfg.smtp_starttls
            and cfg.smtp_host not in ("localhost", "127.0.0.1", "::1")):
        # Refuse rather than send a password in clear text over the network.
        raise ValueError(
            f"SMTP_USER is set but STARTTLS is off for {cfg.smtp_host}:{cfg.smtp_port}; "
            "set SMTP_STARTTLS=true (or use port 587)"
        )
    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout) as smtp:
        if cfg.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context(cafile=cfg.smtp_ca_file or None))
        if cfg.smtp_user:
            smtp.login(cfg.smtp_user, cfg.smtp_password)
        smtp.send_message(msg)


def _post_json(url: str, payload: dict[str, Any], timeout: float) -> None:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "User-Agent": "quantshift-ml"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        if resp.status >= 300:
            raise OSError(f"HTTP {resp.status}")


def _state_path(root: Path) -> Path:
    return Path(root) / "data" / "alerts-state.json"


def _digest(kind: str, host: str, subject: str, message: str) -> str:
    return hashlib.sha256(f"{kind}\0{host}\0{subject}\0{message}".encode()).hexdigest()[:16]


def notify(root: Path, kind: str, subject: str, message: str, cfg: AlertConfig, *,
           host: str | None = None, now: float | None = None) -> dict[str, Any]:
    """Send one alert on every configured channel; JSON-native outcome, secrets redacted."""
    host = host or socket.gethostname()
    now = time.time() if now is None else now
    channels = cfg.channels()
    result: dict[str, Any] = {"kind": kind, "host": host, "channels": channels, "sent": [],
                              "failed": {}, "suppressed": False}
    if not channels:
        log.info("no alert channel configured; alert not sent: %s", subject)
        return result
    key = _digest(kind, host, subject, message)
    state_file = _state_path(root)
    state: dict[str, float] = {}
    if state_file.exists():
        try:
            state = {k: float(v) for k, v in json.loads(state_file.read_text()).items()}
        except (ValueError, OSError, AttributeError):
            state = {}
    last = state.get(key)
    if kind != "train-success" and last is not None and now - last < cfg.quiet_hours * 3600:
        result["suppressed"] = True
        log.info("alert suppressed (same alert sent %.1f h ago): %s", (now - last) / 3600,
                 subject)
        return result
    stamp = dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="seconds")
    body = f"[{kind}] {host} {stamp}\n\n{message}\n"
    text = f"*{subject}*\n{body}"
    senders = {
        "email": lambda: _send_email(cfg, subject, body),
        "slack": lambda: _post_json(cfg.slack_url, {"text": text}, cfg.timeout),
        "discord": lambda: _post_json(cfg.discord_url, {"content": text[:1900]}, cfg.timeout),
    }
    for ch in channels:
        try:
            senders[ch]()
            result["sent"].append(ch)
        except (OSError, smtplib.SMTPException, ValueError) as exc:
            reason = redact(f"{type(exc).__name__}: {exc}", cfg.secrets)
            result["failed"][ch] = reason
            log.warning("alert channel %s failed: %s", ch, reason)
    if result["sent"]:
        state[key] = now
        state = {k: v for k, v in state.items() if now - v < 7 * 86400}
        try:
            atomic_write_json(state_file, state)
        except OSError as exc:
            log.warning("could not record the alert quiet period: %s", exc)
    return result
