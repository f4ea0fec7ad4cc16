"""Helpers every part of the test bed uses: errors, messages, commands, locks.

Why one module: each concern (rootfs, network, processes, host) reports
failures the same way and runs external commands the same way, so the rules
(argv lists only, stderr in the error, progress on stderr) live here once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn


class TestbedError(Exception):
    """A failure with a message meant for the person running the tool."""


def log(message: str) -> None:
    """Write progress to stderr, so stdout stays machine-readable JSON."""
    print(f"testbed: {message}", file=sys.stderr, flush=True)


def die(message: str, code: int = 1) -> NoReturn:
    """Exit with a clear message; used for refusals such as 'not root'."""
    print(f"testbed: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command without a shell; on failure raise with its stderr.

    Commands are always argv lists, so host names and paths are never
    interpreted by a shell.
    """
    cmd = [os.fspath(a) for a in argv]
    try:
        proc = subprocess.run(
            cmd,
            check=False,
            text=True,
            stdin=subprocess.DEVNULL,
            capture_output=capture,
            timeout=timeout,
            env=env,
        )
    except FileNotFoundError as exc:
        raise TestbedError(f"command not found: {cmd[0]} (see apt-packages.txt)") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip()
        raise TestbedError(f"{shlex.join(cmd)} failed ({proc.returncode}): {detail}")
    return proc


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing).

    Several ``up`` commands may run in parallel (Molecule starts them as async
    jobs); locks keep the rootfs build and address allocation race-free.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def require_root() -> None:
    """Refuse early: namespaces, veths, mounts and nspawn all need root."""
    if os.geteuid() != 0:
        die("must run as root (network namespaces, veth links and systemd-nspawn need it)", 2)


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a file with explicit mode, creating parents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
