"""``quantshift-ml console``: serve the console, or add a user to its env file.

``console passwd`` never takes the password on the command line (it would land
in the shell history and ``ps``): it reads it from the terminal or stdin, or
generates one and prints it once. A running console sees the new hash on its
next request and ends that user's sessions. ``console revoke`` ends every
session (or one user's) at once.
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import logging
import re
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

from quantshift_ml.console import auth
from quantshift_ml.console.config import DEFAULT_PORT, IDLE_ENV, find_project, load, state_dir
from quantshift_ml.console.sessions import SessionStore
from quantshift_ml.errors import UsageError
from quantshift_ml.store.files import atomic_write_bytes

log = logging.getLogger(__name__)
_USER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("console", help="web console on the control node: fleet, versions, "
                                       "Train Now, rollback, walk-forward, monitoring")
    p.add_argument("--project", type=Path, default=None,
                   help="the checkout whose playbooks it runs (default: the one holding cwd)")
    p.add_argument("--inventory", type=Path, default=None, help="default inventory/local")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    p.add_argument("--env-file", type=Path, default=None,
                   help="QUANTSHIFT_CONSOLE_USER_<name>=<hash> (and _SECRET) lines")
    p.add_argument("--state", type=Path, default=None, help="default .local/console")
    p.add_argument("--artifacts", type=Path, default=None,
                   help="the controller's artifacts (default: the inventory's "
                        "quantshift_controller_artifacts, read through Ansible)")
    p.add_argument("--walkforward", type=Path, default=None, help="default docs/walkforward")
    p.add_argument("--secure-cookies", action="store_true",
                   help="session cookie only over HTTPS (behind a TLS proxy)")
    p.add_argument("--idle-minutes", type=float, default=None,
                   help=f"end a session after this long without a request (default ${IDLE_ENV} "
                        "or 30; fleet: quantshift_console_idle_minutes)")
    actions = p.add_subparsers(dest="console_action")
    pw = actions.add_parser("passwd", help="add or replace a user in the env file")
    pw.add_argument("--env-file", type=Path, required=True, dest="passwd_file")
    pw.add_argument("--user", default="admin")
    pw.add_argument("--generate", action="store_true",
                    help="generate a random password and print it once")
    pw.add_argument("--if-missing", action="store_true",
                    help="do nothing when the env file already has a user (make console)")
    rv = actions.add_parser("revoke", help="end every console session now (or one user's)")
    rv.add_argument("--user", default=None, dest="revoke_user",
                    help="only this user's sessions (default: everybody's)")
    rv.add_argument("--state", type=Path, default=None, dest="revoke_state",
                    help="the console's --state (default .local/console of the checkout)")


def run(a: argparse.Namespace) -> dict[str, Any]:
    if a.console_action == "passwd":
        return passwd(a.passwd_file, a.user, a.generate, a.if_missing)
    if a.console_action == "revoke":
        state = a.revoke_state or a.state
        return revoke(state_dir(a.project or find_project(Path.cwd()), state), a.revoke_user)
    return serve(a)


def revoke(state: Path, user: str | None) -> dict[str, Any]:
    """Delete the session records: the next request with any of those cookies logs in again."""
    store = SessionStore(state / "sessions", idle=1, absolute=1)  # timeouts unused here
    return {"state": str(state), "user": user, "revoked": store.revoke(user)}


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("console password: ")
        if first != getpass.getpass("again: "):
            raise UsageError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def passwd(path: Path, user: str, generate: bool, if_missing: bool) -> dict[str, Any]:
    """Write ``user``'s hash (and a session secret, once) into the env file, mode 0600."""
    if not _USER_RE.match(user):
        raise UsageError(f"user name {user!r}: letters, digits, '.', '_' or '-' only")
    lines = path.read_text().splitlines() if path.is_file() else []
    if if_missing and any(line.startswith(auth.USER_PREFIX) for line in lines):
        return {"env_file": str(path), "user": None, "changed": False}
    password = secrets.token_urlsafe(12) if generate else _read_password()
    key = f"{auth.USER_PREFIX}{user}"
    kept = [line for line in lines if not line.startswith(key + "=")]
    if not any(line.startswith(auth.SECRET_ENV + "=") for line in kept):
        kept.append(f"{auth.SECRET_ENV}={secrets.token_urlsafe(32)}")
    kept.append(f"{key}={auth.hash_password(password)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, ("\n".join(kept) + "\n").encode(), mode=0o600)
    out: dict[str, Any] = {"env_file": str(path), "user": user, "changed": True}
    if generate:  # shown once, on the terminal that asked for it; never logged
        print(f"console user {user}, password {password} (stored only as a hash in {path})",
              file=sys.stderr)
    return out


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        raise UsageError(f"--host {host!r} is not an IP address") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def serve(a: argparse.Namespace) -> dict[str, Any]:
    """Bind first (so ``--port 0`` prints the real port), then hand the socket to uvicorn."""
    import uvicorn

    from quantshift_ml.console.app import create_app

    config = load(a.project, a.inventory, a.env_file, a.state, a.artifacts, a.walkforward,
                  a.secure_cookies, a.idle_minutes)
    sock = _bind(a.host, a.port)
    if not ipaddress.ip_address(a.host).is_loopback and not a.secure_cookies:
        log.warning("console bound to %s without --secure-cookies: put it behind TLS", a.host)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    print(f"QuantShift console on {url} (inventory {config.inventory})", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning",
                                           access_log=False))
    server.run(sockets=[sock])
    return {"url": url, "stopped": True}
