"""Starting, recognising and stopping the processes the test bed owns.

Why a module of its own: nspawn is not our child once ``up`` has exited, and
a PID in a file may belong to an unrelated process after a crash or reboot.
So processes are found from /proc by what they are (an nspawn whose netns
argument is one of ours, a container PID 1 whose environment carries
``QS_TESTBED_HOST``) and signalled only then.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from .common import TestbedError, log
from .network import NETNS_DIR, NETNS_PREFIX

STOP_TIMEOUT = 30.0
KILL_TIMEOUT = 10.0
#: Set in the environment of every container's PID 1, so its processes can be
#: found even after nspawn itself died (a SIGKILLed nspawn leaves the
#: container's systemd, sshd, cron... running as orphans).
ENV_MARKER = "QS_TESTBED_HOST"


def run_group(argv: list[str], out: IO[str], env: dict[str, str]) -> int:
    """Run a long command in its own process group; kill the group if we die.

    debootstrap forks dpkg and chroot helpers and mounts /proc, /sys and /dev
    nodes into the target; if we are interrupted, none of them may keep
    running and writing into a directory we are about to delete.
    """
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        return proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def spawn_detached(argv: Sequence[str], log_file: Path, env: dict[str, str]) -> int:
    """Start a process that outlives us (own session, output to a file); its PID.

    nspawn must keep running after ``up`` exits and must not get a terminal's
    signals (Ansible's async wrapper, a CI runner's ^C).
    """
    with open(log_file, "w") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
    return proc.pid


def cmdline(pid: int) -> list[str]:
    """argv of a process, or [] if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the comm field (index 0 = state)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def starttime(pid: int) -> int | None:
    """Start time in clock ticks: with the PID it identifies one process."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (a dead, unreaped nspawn)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def is_our_nspawn(pid: int, name: str | None = None) -> bool:
    """Recognise nspawn processes we started by their netns argument.

    We never signal a PID just because a file says so: the PID may have been
    reused by an unrelated process after a reboot or crash.
    """
    argv = cmdline(pid)
    if not argv or Path(argv[0]).name != "systemd-nspawn":
        return False
    wanted = f"--network-namespace-path={NETNS_DIR}/{NETNS_PREFIX}"
    if name is not None:
        wanted += name
        return wanted in argv
    return any(a.startswith(wanted) for a in argv)


def _pids() -> list[int]:
    """Every PID in /proc right now."""
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]


def running_nspawn_pids(name: str | None = None) -> list[int]:
    """PIDs of live systemd-nspawn processes started by this tool."""
    return sorted(pid for pid in _pids() if is_our_nspawn(pid, name) and alive(pid))


def nspawn_machines() -> set[str]:
    """Host names (``--machine=``) of every live nspawn of ours."""
    names: set[str] = set()
    for pid in running_nspawn_pids():
        for arg in cmdline(pid):
            if arg.startswith("--machine="):
                names.add(arg.split("=", 1)[1])
    return names


def _container_host(pid: int) -> str | None:
    """The host name if ``pid`` is PID 1 of its namespace and carries ENV_MARKER."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    nspid = next((ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")), [])
    if len(nspid) < 2 or nspid[-1] != "1":
        return None
    for var in environ:
        key, _, value = var.decode(errors="replace").partition("=")
        if key == ENV_MARKER:
            return value
    return None


def container_inits(name: str | None = None) -> dict[int, str]:
    """Host PIDs of our containers' PID 1 processes, mapped to host names.

    A container init is recognised by two facts: it is PID 1 of its own PID
    namespace (last NSpid field is 1) and its environment carries ENV_MARKER.
    Killing it with SIGKILL takes every process of that container with it.
    """
    found: dict[int, str] = {}
    for pid in _pids():
        host = _container_host(pid)
        if host is not None and (name is None or host == name) and alive(pid):
            found[pid] = host
    return found


def children(pid: int) -> list[int]:
    """Direct children of pid (container PID 1 is a child of nspawn)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def wait_gone(pid: int, timeout: float) -> bool:
    """Poll until pid has exited (nspawn is not our child: no waitpid)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.2)
    return not alive(pid)


def _signal(pids: Sequence[int], signum: int) -> None:
    """Send ``signum`` to each pid that still exists."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def kill_container(init: int) -> None:
    """SIGKILL a container's PID 1 (and so its whole PID namespace)."""
    _signal([init], signal.SIGKILL)
    if not wait_gone(init, KILL_TIMEOUT):
        raise TestbedError(f"container init {init} survived SIGKILL")


def stop_nspawn(pid: int) -> None:
    """Power the container off cleanly, escalating to SIGKILL.

    SIGRTMIN+4 asks the container's systemd for an orderly poweroff; nspawn
    exits once its PID 1 does. If that hangs we SIGTERM nspawn (it forwards a
    shutdown signal), then SIGKILL the container's PID 1 (which takes the
    whole PID namespace with it) and nspawn itself.
    """
    inits = [k for k in children(pid) if alive(k)]
    _signal(inits, signal.SIGRTMIN + 4)
    if not inits:
        _signal([pid], signal.SIGTERM)
    if wait_gone(pid, STOP_TIMEOUT):
        return
    log(f"nspawn {pid} did not stop in {STOP_TIMEOUT:.0f} s; sending SIGTERM")
    _signal([pid], signal.SIGTERM)
    if wait_gone(pid, KILL_TIMEOUT):
        return
    log(f"nspawn {pid} still running; sending SIGKILL")
    _signal([*children(pid), pid], signal.SIGKILL)
    if not wait_gone(pid, KILL_TIMEOUT):
        raise TestbedError(f"nspawn {pid} survived SIGKILL")
