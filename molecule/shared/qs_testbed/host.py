"""One nspawn host: its files, boot, readiness over ssh, and removal.

Why ``up`` is careful in this order: the record is saved before the network
exists and the network before nspawn starts, so whatever step fails, ``down``
finds and removes everything made so far; a host that does not come up in
time is removed too (unless kept for inspection), with its last console lines
shown, because the console log goes with it.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .common import TestbedError, flock, log, run, write_file
from .mounts import safe_rmtree, unmount_under
from .network import (
    NETNS_DIR,
    check_address_free,
    link_exists,
    netns_exists,
    netns_name,
    setup_network,
    teardown_network,
)
from .processes import (
    ENV_MARKER,
    alive,
    container_inits,
    is_our_nspawn,
    kill_container,
    running_nspawn_pids,
    spawn_detached,
    starttime,
    stop_nspawn,
)
from .rootfs import BASE_HOSTS
from .state import Host, host_dir, known_hosts, load_host, save_host

BOOT_TIMEOUT = 90.0


@dataclass(frozen=True)
class BootOptions:
    """How ``up`` boots a host: the rootfs, the client key, patience, cleanup."""

    cache: Path
    key: str | None = None
    timeout: float = BOOT_TIMEOUT
    keep_on_failure: bool = False


def ssh_keygen(key: Path, comment: str) -> None:
    """A new passphrase-less ed25519 keypair at key and key.pub."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])


def ensure_keypair(state: Path) -> Path:
    """Generate the shared client keypair once; return the private key path."""
    key = state / "id_ed25519"
    with flock(state / "locks" / "keygen.lock"):
        if not key.exists():
            key.with_suffix(".pub").unlink(missing_ok=True)
            ssh_keygen(key, "quantshift-testbed")
    return key


def client_key(state: Path, key: str | None) -> tuple[Path, Path]:
    """(private, public) key ssh logs in with: ``--key`` or the shared pair."""
    if not key:
        identity = ensure_keypair(state)
        return identity, identity.with_name(identity.name + ".pub")
    pub = Path(key)
    identity = pub.with_suffix("") if pub.suffix == ".pub" else pub
    if not pub.is_file() or not identity.is_file():
        raise TestbedError(
            f"--key needs a public key file with its private key beside it ({pub}, {identity})"
        )
    return identity, pub


def _mkdir(path: Path, mode: int) -> None:
    """mkdir with an exact mode.

    In an overlay the upper directory's own mode wins over the lower one, so
    /root must stay 0700 and /etc 0755 exactly as in the rootfs.
    """
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)


def prepare_upper(hdir: Path, host: Host, pubkey: str) -> None:
    """Write the files that make this host itself.

    hostname, hosts, machine-id, its own ssh host key, and root's
    authorized_keys. A known_hosts file next to it lets our readiness probe
    check the host key strictly.
    """
    upper = hdir / "upper"
    safe_rmtree(upper)
    for sub, mode in (("", 0o755), ("etc", 0o755), ("etc/ssh", 0o755), ("root", 0o700)):
        _mkdir(upper / sub, mode)
    _mkdir(upper / "root/.ssh", 0o700)
    write_file(upper / "root/.ssh/authorized_keys", pubkey.strip() + "\n", 0o600)
    write_file(upper / "etc/hostname", host.name + "\n")
    hosts = BASE_HOSTS.splitlines(keepends=True)
    hosts.insert(1, f"127.0.1.1\t{host.name}\n")
    write_file(upper / "etc/hosts", "".join(hosts))
    write_file(upper / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    hostkey = upper / "etc/ssh/ssh_host_ed25519_key"
    ssh_keygen(hostkey, f"root@{host.name}")
    hostpub = hostkey.with_name(hostkey.name + ".pub").read_text().split()
    write_file(hdir / "known_hosts", f"{host.address} {hostpub[0]} {hostpub[1]}\n")


def ssh_argv(hdir: Path, host: Host, *remote: str) -> list[str]:
    """ssh to the host with strict host-key checking against its own key."""
    options = {
        "BatchMode": "yes",
        "IdentitiesOnly": "yes",
        "ConnectTimeout": "3",
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": str(hdir / "known_hosts"),
        "GlobalKnownHostsFile": "/dev/null",
        "LogLevel": "ERROR",
    }
    argv = ["ssh", "-F", "/dev/null", "-i", host.identity_file, "-l", "root"]
    for key, value in options.items():
        argv += ["-o", f"{key}={value}"]
    return [*argv, host.address, *remote]


def _report_degraded(hdir: Path, host: Host) -> None:
    """Log the failed units of a host that booted ``degraded``."""
    failed = run(
        ssh_argv(hdir, host, "systemctl", "--failed", "--no-legend"), check=False, timeout=15
    ).stdout.strip()
    log(f"{host.name} is degraded; failed units: {failed or '?'}")


def wait_ready(hdir: Path, host: Host, timeout: float) -> str:
    """Wait until ssh works and systemd reports running/degraded.

    ``degraded`` is accepted because a unit failing inside a test host is the
    business of the test, not of the test bed; it is reported on stderr.
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if host.pid is None or not alive(host.pid):
            raise TestbedError(f"systemd-nspawn for {host.name} exited during boot")
        proc = run(ssh_argv(hdir, host, "systemctl", "is-system-running"), check=False, timeout=15)
        status = proc.stdout.strip()
        if status in ("running", "degraded"):
            if status == "degraded":
                _report_degraded(hdir, host)
            return status
        last = status or proc.stderr.strip() or f"ssh exit {proc.returncode}"
        time.sleep(0.5)
    raise TestbedError(f"{host.name} not ready after {timeout:g} s (last: {last})")


def nspawn_argv(host: Host, upper: Path) -> list[str]:
    """systemd-nspawn booting ``host`` on the shared rootfs in its namespace.

    The netns path and ENV_MARKER are what ``processes`` recognises our
    nspawn and container PID 1 by.
    """
    return [
        *("systemd-nspawn", "-q", "-D", host.rootfs),
        f"--overlay={host.rootfs}:{upper}:/",
        *("--register=no", "--keep-unit", "-b"),
        f"--machine={host.name}",
        f"--network-namespace-path={NETNS_DIR / host.netns}",
        f"--setenv={ENV_MARKER}={host.name}",
        *("--console=read-only", "--link-journal=no"),
    ]


def _running(state: Path, name: str) -> Host | None:
    """The record of ``name`` if exactly the nspawn it names still runs."""
    host = load_host(state, name)
    if (
        host
        and host.pid
        and is_our_nspawn(host.pid, name)
        and alive(host.pid)
        and starttime(host.pid) == host.starttime
    ):
        return host
    return None


def _has_traces(state: Path, name: str) -> bool:
    """True if anything of an earlier ``name`` (dir, netns, processes) is left."""
    return bool(
        host_dir(state, name).exists()
        or netns_exists(netns_name(name))
        or running_nspawn_pids(name)
        or container_inits(name)
    )


def _claim_network(state: Path, host: Host) -> None:
    """Check the index is free, record the host, create its namespace and veth."""
    with flock(state / "locks" / "network.lock"):
        for other in known_hosts(state):
            rec = load_host(state, other)
            if other != host.name and rec and rec.index == host.index:
                raise TestbedError(f"index {host.index} is already used by host {other}")
        if link_exists(host.veth):
            raise TestbedError(f"link {host.veth} already exists (index {host.index} in use?)")
        check_address_free(host.index)
        save_host(state, host)  # first, so down can undo a half-failed up
        try:
            setup_network(host.netns, host.index)
        except TestbedError:
            down_host(state, host.name)
            raise


def _boot_failed(state: Path, name: str, keep: bool, interrupted: bool) -> None:
    """Show the console's end, then remove the host or keep it for inspection."""
    tail = ""
    with contextlib.suppress(OSError):
        lines = (host_dir(state, name) / "console.log").read_text(errors="replace").splitlines()
        tail = "\n".join(lines[-25:])
    if tail and not interrupted:
        log(f"last console lines of {name}:\n{tail}")
    if keep:
        log(f"leaving {name} for inspection; run 'testbed.py down {name}'")
    else:
        down_host(state, name)


def _boot(state: Path, host: Host, pub: Path, opts: BootOptions) -> None:
    """Write the upper dir, start nspawn and wait for ssh; record each phase."""
    hdir = host_dir(state, host.name)
    started = time.monotonic()
    try:
        prepare_upper(hdir, host, pub.read_text())
        env = dict(os.environ, SYSTEMD_NSPAWN_LOCK="0")
        host.pid = spawn_detached(nspawn_argv(host, hdir / "upper"), hdir / "console.log", env)
        host.starttime = starttime(host.pid)
        host.phase = "booting"
        save_host(state, host)
        wait_ready(hdir, host, opts.timeout)
    except BaseException as exc:
        _boot_failed(state, host.name, opts.keep_on_failure, isinstance(exc, KeyboardInterrupt))
        if isinstance(exc, (TestbedError, OSError)):
            raise TestbedError(f"up {host.name} failed: {exc}") from exc
        raise
    host.phase = "running"
    save_host(state, host)
    log(f"{host.name} up at {host.address} in {time.monotonic() - started:.1f} s")


def up_host(state: Path, name: str, index: int, opts: BootOptions) -> Host:
    """Boot ``name`` (or confirm it runs) and return its record; hold its lock.

    A host that already runs with the same index is only waited for; any
    traces of an earlier one are removed first.
    """
    existing = _running(state, name)
    if existing:
        if existing.index != index:
            raise TestbedError(f"{name} is running with index {existing.index}, not {index}")
        wait_ready(host_dir(state, name), existing, opts.timeout)
        log(f"{name} already running")
        return existing
    if _has_traces(state, name):
        log(f"cleaning up leftovers of a previous {name}")
        down_host(state, name)
    identity, pub = client_key(state, opts.key)
    host = Host(
        name=name, index=index, rootfs=str(opts.cache), identity_file=str(identity.resolve())
    )
    _claim_network(state, host)
    _boot(state, host, pub, opts)
    return host


def down_host(state: Path, name: str) -> None:
    """Stop and remove everything ``up`` may have created for ``name``.

    Works from whatever is left: host.json may be missing or the process may
    be gone; each step checks and skips.
    """
    host = load_host(state, name)
    pids = set(running_nspawn_pids(name))
    if host and host.pid and is_our_nspawn(host.pid, name) and alive(host.pid):
        pids.add(host.pid)
    for pid in sorted(pids):
        log(f"stopping {name} (nspawn pid {pid})")
        stop_nspawn(pid)
    for init in container_inits(name):
        log(f"killing orphaned container of {name} (init pid {init}; its nspawn is gone)")
        kill_container(init)
    hdir = host_dir(state, name)
    unmount_under(hdir)
    teardown_network(netns_name(name), host.veth if host else None)
    safe_rmtree(hdir)
