"""Who may use the console: password hashes, login throttling and CSRF tokens.

Passwords are never stored, only scrypt hashes (``scrypt$n$r$p$salt$hash``, stdlib
``hashlib.scrypt``: no extra dependency on the control node). The hashes come from
the environment or an env file (``QUANTSHIFT_CONSOLE_USER_<name>=<hash>``), which a
role writes from Ansible Vault; nothing secret lives in the repository.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from quantshift_ml.errors import UsageError

USER_PREFIX = "QUANTSHIFT_CONSOLE_USER_"
SECRET_ENV = "QUANTSHIFT_CONSOLE_SECRET"
# scrypt cost: about 50 ms a login on the machines this runs on, 16 MiB of memory
_N, _R, _P = 2**14, 8, 1


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The storable form of a password; a fresh random salt unless one is given."""
    if not password:
        raise UsageError("the console password must not be empty")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; a malformed hash never matches."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(_unb64(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


def users_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """``{user: hash}`` from ``QUANTSHIFT_CONSOLE_USER_<name>`` variables.

    A value that is not a scrypt hash is refused by name (never by value): a
    plain password pasted there by mistake must not silently become a login.
    """
    users = {key[len(USER_PREFIX):]: value for key, value in env.items()
             if key.startswith(USER_PREFIX) and key != USER_PREFIX}
    for name, value in users.items():
        if not value.startswith("scrypt$") or value.count("$") != 5:
            raise UsageError(f"{USER_PREFIX}{name} is not a password hash: create one with "
                             "`quantshift-ml console passwd --user NAME --env-file FILE`")
    return users


@dataclass
class Throttle:
    """Refuses logins from one client after ``limit`` failures within ``window`` seconds."""

    limit: int = 5
    window: float = 300.0
    _failures: dict[str, list[float]] = field(default_factory=dict)

    def blocked(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        recent = [t for t in self._failures.get(client, []) if now - t < self.window]
        self._failures[client] = recent
        return len(recent) >= self.limit

    def failed(self, client: str, now: float | None = None) -> None:
        self._failures.setdefault(client, []).append(time.monotonic() if now is None else now)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


def new_token() -> str:
    """A CSRF token: one per session, sent back in every form."""
    return secrets.token_urlsafe(32)


def token_ok(expected: object, given: object) -> bool:
    """Constant-time comparison; a missing token on either side never matches."""
    return (isinstance(expected, str) and isinstance(given, str) and bool(expected)
            and hmac.compare_digest(expected.encode(), given.encode()))
