"""The console's sessions, decided on the server: one file per session in ``STATE/sessions``.

Why a record per session rather than a per-user generation counter: logout must
end exactly the session that logged out (not a colleague's on another machine),
and an idle timeout needs a last-activity time per session anyway. Files in the
state directory are shared by every worker and thread of the console and survive
a restart; nothing lives only in one process's memory.

The cookie carries only a random session id (256 bits). The file is named by the
id's sha256, so a copy of the directory does not hold a usable cookie. A record
is written once, atomically, mode 0600, and only read with ``O_NOFOLLOW``; its
modification time is the last activity and is slid with ``utime`` (never
following a symlink, never creating a file) instead of rewriting the record, so
a request racing a logout can never bring a deleted session back. A session
ends, and its file is deleted, on:

- logout;
- a changed password: the record keeps a fingerprint of the user's password hash
  at login, and a different (or missing) hash refuses it;
- the idle timeout (no request for ``idle`` seconds);
- the absolute timeout (``absolute`` seconds after login, whatever the activity);
- ``quantshift-ml console revoke`` (all sessions, or one user's).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from quantshift_ml.errors import UsageError
from quantshift_ml.store.files import atomic_write_bytes

_SID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)
_RECORD = re.compile(r"^[0-9a-f]{64}\.json$")

Clock = Callable[[], float]
"""Wall-clock seconds (``time.time``); tests inject their own instead of sleeping."""
OnEnd = Callable[[str, str], None]
"""Called with (user, reason) once per session the store ends by itself."""


def fingerprint(stored_hash: str) -> str:
    """A digest of the user's password hash: a new password gives a different one.

    The hash is salted scrypt, so its digest says nothing about the password; the
    record holds the digest, not the hash, so it never becomes a copy of a secret.
    """
    return hashlib.sha256(b"quantshift-console-session\0" + stored_hash.encode()).hexdigest()


def new_id() -> str:
    """A session id or a login nonce: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def valid_id(value: str) -> bool:
    """Shaped like ``new_id()``: anything else in the cookie is ignored, never used."""
    return bool(_SID.match(value))


@dataclass(frozen=True)
class Session:
    """One logged-in session: who, its CSRF token, when it began, which password."""

    sid: str
    user: str
    csrf: str
    created: float
    password_digest: str


class SessionStore:
    """Creates, checks, slides and deletes the session records of one state directory."""

    def __init__(self, directory: Path, idle: float, absolute: float,
                 clock: Clock = time.time, on_end: OnEnd | None = None) -> None:
        if idle <= 0 or absolute <= 0:
            raise UsageError("session timeouts must be positive")
        self.directory, self.idle, self.absolute = directory, idle, absolute
        self.clock = clock
        self.on_end = on_end or (lambda user, reason: None)

    def _dir(self) -> Path:
        """The records' directory, created 0700; a symlink in its place is refused."""
        try:
            st = os.lstat(self.directory)
        except FileNotFoundError:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            st = os.lstat(self.directory)
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{self.directory} is not a directory (a symlink?): the console "
                             "keeps its sessions there and will not write through it")
        return self.directory

    def _path(self, sid: str) -> Path:
        return self._dir() / (hashlib.sha256(sid.encode()).hexdigest() + ".json")

    def create(self, user: str, stored_hash: str, csrf: str) -> Session:
        """A new session for ``user`` (the password just checked against ``stored_hash``)."""
        session = Session(sid=new_id(), user=user, csrf=csrf, created=self.clock(),
                          password_digest=fingerprint(stored_hash))
        path = self._path(session.sid)
        record = {k: v for k, v in asdict(session).items() if k != "sid"}
        atomic_write_bytes(path, json.dumps(record, sort_keys=True).encode(), mode=0o600)
        os.utime(path, (session.created, session.created), follow_symlinks=False)
        return session

    def lookup(self, sid: str, users: Mapping[str, str]) -> Session | None:
        """The live session ``sid`` names, its idle timer slid; None (and deleted) otherwise."""
        if not valid_id(sid):
            return None
        return self._check(self._path(sid), sid, users, slide=True)

    def delete(self, sid: str) -> bool:
        """Logout: the record goes, so every copy of the cookie is refused from now on."""
        return valid_id(sid) and _unlink(self._path(sid))

    def revoke(self, user: str | None = None) -> int:
        """Delete every record (or ``user``'s); the number deleted."""
        count = 0
        for path in self._records():
            record = _read(path)
            if record is not None and user is not None and record[0].get("user") != user:
                continue
            count += _unlink(path)
        return count

    def prune(self, users: Mapping[str, str]) -> int:
        """Delete the records that have ended (run at each login, so the directory stays small)."""
        return sum(self._check(path, "", users, slide=False) is None
                   for path in list(self._records()))

    def _records(self) -> Iterator[Path]:
        """The record files; none (and nothing created) before the first login."""
        if not os.path.lexists(self.directory):
            return iter(())
        return (p for p in self._dir().iterdir() if _RECORD.match(p.name))

    def _check(self, path: Path, sid: str, users: Mapping[str, str],
               slide: bool) -> Session | None:
        loaded = _read(path)
        if loaded is None:
            return None
        record, last_seen = loaded
        now = self.clock()
        try:
            session = Session(sid=sid, user=str(record["user"]), csrf=str(record["csrf"]),
                              created=float(record["created"]),
                              password_digest=str(record["password_digest"]))
        except (KeyError, TypeError, ValueError):
            _unlink(path)
            return None
        reason = self._ended(session, last_seen, now, users)
        if reason is not None:
            if _unlink(path):  # only the request that deleted it reports it
                self.on_end(session.user, reason)
            return None
        if slide:
            _touch(path, now)
        return session

    def _ended(self, session: Session, last_seen: float, now: float,
               users: Mapping[str, str]) -> str | None:
        if now - session.created >= self.absolute:
            return "absolute timeout"
        if now - last_seen >= self.idle:
            return "idle timeout"
        stored = users.get(session.user)
        if stored is None:
            return "user removed"
        if not secrets.compare_digest(fingerprint(stored), session.password_digest):
            return "password changed"
        return None


def _read(path: Path) -> tuple[dict[str, Any], float] | None:
    """The record and its modification time, never through a symlink; None if unusable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP):
            return None
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        try:
            record = json.loads(fh.read(4096))
        except ValueError:
            record = None
    if not isinstance(record, dict):
        _unlink(path)
        return None
    return record, st.st_mtime


def _touch(path: Path, now: float) -> None:
    """Slide the idle timer: set the mtime of the record, if it is still there (no recreate)."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(path, (now, now), follow_symlinks=False)


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
