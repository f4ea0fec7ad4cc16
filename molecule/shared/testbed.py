#!/usr/bin/env python3
"""Boot real Debian 12 test hosts with systemd-nspawn, without Docker.

Why this exists: the machines that run our tests and CI have no container
engine, yet the roles and playbooks must be exercised against hosts that look
like production: systemd as PID 1, sshd, cron, their own hostname, address and
filesystem. systemd-nspawn gives exactly that from a plain directory tree.

Design, and the reasons for it:

* One Debian root filesystem is built once with debootstrap and cached outside
  the checkout (``/var/cache/quantshift-testbed/rootfs``), so repeated runs on
  one machine skip the ~90 s build. It is built in a temporary directory and
  renamed into place only when complete, with a marker file that records the
  recipe, so an interrupted build is never mistaken for a good cache and a
  changed recipe triggers a rebuild.
* Every host boots on an overlay whose lower layer is that shared, never
  modified tree; only the files a host writes land in its private upper
  directory. Sixteen hosts therefore cost sixteen small upper dirs and the
  memory of their own processes, not sixteen copies of Debian.
* Every host gets its own network namespace ``qs-NAME`` and a veth pair,
  ``10.231.INDEX.1/30`` on the controller side and ``10.231.INDEX.2/30`` inside
  the host. These are the only addresses this tool ever configures or talks
  to; the hosts have no default route, so nothing they do leaves the pair.
* nspawn runs detached (own session, stdin from /dev/null, console to a log
  file) with ``--register=no --keep-unit`` because the controller has no
  systemd/D-Bus to register machines with.
* ``down`` is idempotent and also repairs half-failed ``up`` runs; ``check-clean``
  proves nothing (process, namespace, link, mount, upper dir) is left behind.

Everything is Python standard library plus the ``ip``, ``debootstrap``,
``systemd-nspawn``, ``ssh`` and ``ssh-keygen`` commands (see apt-packages.txt).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

# --------------------------------------------------------------------------
# Constants: the recipe and the places we own.
# --------------------------------------------------------------------------

SUITE = "bookworm"
VARIANT = "minbase"
#: Packages baked into the shared root filesystem. The roles' apt tasks find
#: them installed, because the test hosts have no route to any package mirror.
PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-venv",
    "python3-packaging",
    "python3-apt",
    "cron",
    "sudo",
    "ca-certificates",
    "acl",
    "iproute2",
    "procps",
    "curl",
)
#: Bump when customize_rootfs() changes, so cached trees get rebuilt.
CUSTOMIZE_VERSION = 1
#: Units that only make sense on a networked, long-lived machine. apt-daily
#: would also grab the dpkg lock in the middle of a converge.
MASKED_UNITS: tuple[str, ...] = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "apt-daily.service",
    "apt-daily-upgrade.service",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "console-getty.service",
    "getty@.service",
    "systemd-networkd-wait-online.service",
)
ENABLED_UNITS: tuple[str, ...] = ("ssh.service", "cron.service")

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_CACHE = Path("/var/cache/quantshift-testbed/rootfs")
DEFAULT_STATE = Path("/run/quantshift-testbed")
MARKER = "etc/quantshift-testbed-rootfs.json"

NETNS_PREFIX = "qs-"
NETNS_DIR = Path("/run/netns")
#: Controller-side veth names are qs-h<INDEX>; the peer becomes eth0 inside
#: the host's namespace. Index-based names always fit IFNAMSIZ (15 chars).
VETH_PREFIX = "qs-h"
SUBNET_PREFIX = "10.231"
MIN_INDEX, MAX_INDEX = 1, 60
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,28}[a-z0-9])?$")

BOOT_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
KILL_TIMEOUT = 10.0


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


# --------------------------------------------------------------------------
# Root filesystem.
# --------------------------------------------------------------------------


def recipe() -> dict[str, Any]:
    """What the cached tree was built from; a change forces a rebuild."""
    return {
        "suite": SUITE,
        "variant": VARIANT,
        "packages": list(PACKAGES),
        "customize_version": CUSTOMIZE_VERSION,
        "masked": list(MASKED_UNITS),
        "enabled": list(ENABLED_UNITS),
    }


def recipe_hash() -> str:
    """Short stable digest of recipe()."""
    blob = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _apt_source_files() -> list[Path]:
    """The files apt itself reads: sources.list plus *.list / *.sources."""
    files = [Path("/etc/apt/sources.list")]
    parts = Path("/etc/apt/sources.list.d")
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    return [f for f in files if f.is_file()]


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    """Parse deb822 (.sources) stanzas; continuation lines are joined."""
    stanza: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanza:
                yield stanza
            stanza, key = {}, ""
            continue
        if raw[0] in " \t" and key:
            stanza[key] += " " + raw.strip()
            continue
        if ":" in raw:
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            stanza[key] = value.strip()


def find_debian_mirror() -> tuple[str, str | None]:
    """Return (mirror URI, keyring or None) apt on this machine uses for SUITE.

    Why: the controller may only reach a local mirror or proxy; reusing apt's
    own configuration means debootstrap goes wherever apt already goes.
    ``QS_TESTBED_MIRROR`` overrides.
    """
    override = os.environ.get("QS_TESTBED_MIRROR")
    if override:
        return override, None
    for path in _apt_source_files():
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for st in _deb822_stanzas(text):
                if st.get("enabled", "yes").lower() == "no":
                    continue
                if "deb" not in st.get("types", "").split():
                    continue
                if SUITE not in st.get("suites", "").split():
                    continue
                if "main" not in st.get("components", "").split():
                    continue
                for uri in st.get("uris", "").split():
                    if uri.startswith(("http://", "https://", "file:/")):
                        keyring = st.get("signed-by")
                        if keyring and not Path(keyring).is_file():
                            keyring = None
                        return uri.rstrip("/"), keyring
        else:
            for line in text.splitlines():
                fields = line.split("#", 1)[0].split()
                if len(fields) < 4 or fields[0] != "deb":
                    continue
                keyring = None
                if fields[1].startswith("["):
                    opts: list[str] = []
                    while fields and not fields[0].endswith("]"):
                        opts.append(fields.pop(0))
                    if fields:
                        opts.append(fields.pop(0))
                    fields.insert(0, "deb")
                    for opt in " ".join(opts).strip("[] ").split():
                        if opt.startswith("signed-by="):
                            keyring = opt.split("=", 1)[1]
                if len(fields) >= 4 and fields[2] == SUITE and "main" in fields[3:]:
                    if keyring and not Path(keyring).is_file():
                        keyring = None
                    return fields[1].rstrip("/"), keyring
    log(f"no apt source for {SUITE} found; falling back to {DEFAULT_MIRROR}")
    return DEFAULT_MIRROR, None


def _apt_proxy_env() -> dict[str, str]:
    """Carry apt's configured HTTP(S) proxy over to debootstrap (it uses wget)."""
    env = dict(os.environ)
    for scheme in ("http", "https"):
        var = f"{scheme}_proxy"
        if env.get(var):
            continue
        proc = run(["apt-config", "shell", "P", f"Acquire::{scheme}::Proxy"], check=False)
        parts = shlex.split(proc.stdout.strip())
        if parts and parts[0].startswith("P="):
            value = parts[0][2:]
            if value and value.upper() != "DIRECT":
                env[var] = value
    return env


def rootfs_is_current(root: Path) -> bool:
    """True when ``root`` is a completed build of the current recipe."""
    marker = root / MARKER
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("recipe_hash") == recipe_hash()


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a file with explicit mode, creating parents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def customize_rootfs(root: Path) -> None:
    """Make the debootstrapped tree boot cleanly as a container.

    Reasons per step: sshd accepts only keys for root (Ansible connects as
    root with a generated key); host keys are generated per host at ``up``
    so hosts are distinguishable; apt timers and gettys are masked because
    they either need the network or waste memory per host; the journal is
    kept in memory and small, to keep hosts cheap.
    """
    _write(
        root / "etc/ssh/sshd_config.d/10-quantshift-testbed.conf",
        "# Managed by quantshift testbed.py: key-only root login for test hosts.\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UseDNS no\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n",
    )
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _write(
        root / "etc/hosts",
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n",
    )
    _write(root / "etc/default/locale", "LANG=C.UTF-8\n")
    _write(
        root / "etc/systemd/journald.conf.d/10-quantshift-testbed.conf",
        "[Journal]\nStorage=volatile\nRuntimeMaxUse=8M\n",
    )
    # Every host gets its own machine-id in its upper dir.
    _write(root / "etc/machine-id", "", 0o444)
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
        dbus_id.symlink_to("/etc/machine-id")
    (root / "root").chmod(0o700)
    run(["systemctl", f"--root={root}", "enable", *ENABLED_UNITS])
    run(["systemctl", f"--root={root}", "mask", *MASKED_UNITS])
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


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


def safe_rmtree(path: Path) -> None:
    """Delete a tree we created, never descending into a mount.

    An interrupted debootstrap leaves /proc, /sys and bind-mounted /dev nodes
    inside its target; a plain rmtree would walk into them. Unmount first and
    refuse if anything is still mounted below ``path``.
    """
    if not path.exists() and not path.is_symlink():
        return
    unmount_under(path)
    left = mounts_under(path)
    if left:
        raise TestbedError(f"refusing to delete {path}: still mounted: {', '.join(left)}")
    shutil.rmtree(path)


def build_rootfs(cache: Path) -> bool:
    """Ensure a current rootfs exists at ``cache``; return True if built now."""
    lock = cache.with_name(cache.name + ".lock")
    with flock(lock):
        if rootfs_is_current(cache):
            return False
        for stale in [
            *cache.parent.glob(cache.name + ".partial.*"),
            *cache.parent.glob(cache.name + ".old.*"),
        ]:
            log(f"removing interrupted build {stale}")
            safe_rmtree(stale)
        if cache.exists():
            if not (cache / MARKER).exists() and any(cache.iterdir()):
                raise TestbedError(
                    f"{cache} exists but is not a testbed rootfs (no {MARKER}); "
                    "remove it yourself or choose another --cache"
                )
            if running_nspawn_pids():
                raise TestbedError(
                    f"{cache} is outdated but test hosts are running; "
                    "run 'testbed.py down-all' first"
                )
        mirror, keyring = find_debian_mirror()
        partial = cache.with_name(f"{cache.name}.partial.{os.getpid()}")
        build_log = cache.with_name(cache.name + ".build.log")
        argv = [
            "debootstrap",
            f"--variant={VARIANT}",
            "--components=main",
            f"--include={','.join(PACKAGES)}",
        ]
        if keyring:
            argv.append(f"--keyring={keyring}")
        argv += [SUITE, str(partial), mirror]
        log(f"building {SUITE} rootfs from {mirror} (log: {build_log}); takes a few minutes")
        started = time.monotonic()
        try:
            with open(build_log, "w") as out:
                returncode = run_group(argv, out, _apt_proxy_env())
            if returncode != 0:
                tail = build_log.read_text(errors="replace").splitlines()[-15:]
                raise TestbedError("debootstrap failed:\n" + "\n".join(tail))
            customize_rootfs(partial)
            marker = {
                "recipe_hash": recipe_hash(),
                "recipe": recipe(),
                "mirror": mirror,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "build_seconds": round(time.monotonic() - started, 1),
            }
            _write(partial / MARKER, json.dumps(marker, indent=2) + "\n")
            if cache.exists():
                old = cache.with_name(f"{cache.name}.old.{os.getpid()}")
                cache.rename(old)
                partial.rename(cache)
                safe_rmtree(old)
            else:
                partial.rename(cache)
        except BaseException:
            safe_rmtree(partial)
            raise
        log(f"rootfs ready at {cache} in {time.monotonic() - started:.0f} s")
        return True


# --------------------------------------------------------------------------
# Host state.
# --------------------------------------------------------------------------


@dataclass
class Host:
    """What ``up`` records about one host, so ``down`` can undo exactly it."""

    name: str
    index: int
    rootfs: str
    identity_file: str
    phase: str = "creating"
    pid: int | None = None
    starttime: int | None = None

    @property
    def netns(self) -> str:
        """Network namespace name: qs-NAME."""
        return NETNS_PREFIX + self.name

    @property
    def veth(self) -> str:
        """Controller-side veth name: qs-h<INDEX>."""
        return f"{VETH_PREFIX}{self.index}"

    @property
    def address(self) -> str:
        """The host's own address, inside its namespace."""
        return f"{SUBNET_PREFIX}.{self.index}.2"

    @property
    def gateway(self) -> str:
        """The controller's address on the pair."""
        return f"{SUBNET_PREFIX}.{self.index}.1"


def host_dir(state: Path, name: str) -> Path:
    """Per-host state directory (upper dir, logs, keys, host.json)."""
    return state / "hosts" / name


def host_lock(state: Path, name: str) -> Path:
    """Per-host lock file; kept outside the host dir, which down deletes."""
    return state / "locks" / f"{name}.lock"


def load_host(state: Path, name: str) -> Host | None:
    """Read host.json, or None if absent/corrupt (e.g. a half-failed up)."""
    try:
        data = json.loads((host_dir(state, name) / "host.json").read_text())
        return Host(**data)
    except (OSError, ValueError, TypeError):
        return None


def save_host(state: Path, host: Host) -> None:
    """Write host.json atomically, so a crash never leaves half a record."""
    hdir = host_dir(state, host.name)
    hdir.mkdir(parents=True, exist_ok=True)
    tmp = hdir / "host.json.tmp"
    tmp.write_text(json.dumps(asdict(host), indent=2) + "\n")
    tmp.replace(hdir / "host.json")


def known_hosts(state: Path) -> list[str]:
    """Names of hosts that have a state directory."""
    hosts = state / "hosts"
    if not hosts.is_dir():
        return []
    return sorted(p.name for p in hosts.iterdir() if p.is_dir())


def instance_config(host: Host) -> dict[str, Any]:
    """The dict Molecule's delegated driver expects in instance_config.yml."""
    return {
        "instance": host.name,
        "address": host.address,
        "user": "root",
        "port": 22,
        "identity_file": host.identity_file,
        "connection": "ssh",
    }


# --------------------------------------------------------------------------
# Processes.
# --------------------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
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


def _starttime(pid: int) -> int | None:
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
    argv = _cmdline(pid)
    if not argv or Path(argv[0]).name != "systemd-nspawn":
        return False
    wanted = f"--network-namespace-path={NETNS_DIR}/{NETNS_PREFIX}"
    if name is not None:
        wanted += name
        return wanted in argv
    return any(a.startswith(wanted) for a in argv)


def running_nspawn_pids(name: str | None = None) -> list[int]:
    """PIDs of live systemd-nspawn processes started by this tool."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            if is_our_nspawn(pid, name) and alive(pid):
                pids.append(pid)
    return sorted(pids)


#: Set in the environment of every container's PID 1, so its processes can be
#: found even after nspawn itself died (a SIGKILLed nspawn leaves the
#: container's systemd, sshd, cron... running as orphans).
ENV_MARKER = "QS_TESTBED_HOST"


def container_inits(name: str | None = None) -> dict[int, str]:
    """Host PIDs of our containers' PID 1 processes, mapped to host names.

    A container init is recognised by two facts: it is PID 1 of its own PID
    namespace (last NSpid field is 1) and its environment carries ENV_MARKER.
    Killing it with SIGKILL takes every process of that container with it.
    """
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        nspid = next((ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")), [])
        if len(nspid) < 2 or nspid[-1] != "1":
            continue
        for var in environ:
            key, _, value = var.decode(errors="replace").partition("=")
            if key == ENV_MARKER and (name is None or value == name):
                if alive(int(entry.name)):
                    found[int(entry.name)] = value
                break
    return found


def kill_container(init: int) -> None:
    """SIGKILL a container's PID 1 (and so its whole PID namespace)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(init, signal.SIGKILL)
    if not wait_gone(init, KILL_TIMEOUT):
        raise TestbedError(f"container init {init} survived SIGKILL")


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


def stop_nspawn(pid: int) -> None:
    """Power the container off cleanly, escalating to SIGKILL.

    SIGRTMIN+4 asks the container's systemd for an orderly poweroff; nspawn
    exits once its PID 1 does. If that hangs we SIGTERM nspawn (it forwards a
    shutdown signal), then SIGKILL the container's PID 1 (which takes the
    whole PID namespace with it) and nspawn itself.
    """
    inits = [k for k in children(pid) if alive(k)]
    for init in inits:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init, signal.SIGRTMIN + 4)
    if not inits:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if wait_gone(pid, STOP_TIMEOUT):
        return
    log(f"nspawn {pid} did not stop in {STOP_TIMEOUT:.0f} s; sending SIGTERM")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_gone(pid, KILL_TIMEOUT):
        return
    log(f"nspawn {pid} still running; sending SIGKILL")
    for victim in [*children(pid), pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    if not wait_gone(pid, KILL_TIMEOUT):
        raise TestbedError(f"nspawn {pid} survived SIGKILL")


# --------------------------------------------------------------------------
# Network.
# --------------------------------------------------------------------------


def netns_exists(netns: str) -> bool:
    """True if /run/netns/NAME exists (ip netns add creates it)."""
    return (NETNS_DIR / netns).exists()


def link_exists(link: str) -> bool:
    """True if a link of that name exists in the root namespace."""
    return Path(f"/sys/class/net/{link}").exists()


def root_ns_addresses() -> list[tuple[str, ipaddress.IPv4Interface]]:
    """(link, address) of every IPv4 address in the controller namespace."""
    proc = run(["ip", "-j", "-4", "addr", "show"])
    out = []
    for link in json.loads(proc.stdout or "[]"):
        for info in link.get("addr_info", []):
            iface = ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
            out.append((link.get("ifname", "?"), iface))
    return out


def check_address_free(host: Host) -> None:
    """Refuse if 10.231.INDEX.0/30 is already used by anything but our veth.

    This guarantees we only ever talk to addresses in namespaces we created.
    """
    net = ipaddress.IPv4Network(f"{SUBNET_PREFIX}.{host.index}.0/30")
    for link, iface in root_ns_addresses():
        if iface.network.overlaps(net) and link != host.veth:
            raise TestbedError(f"{net} is already used on link {link}; pick another index")


def setup_network(host: Host) -> None:
    """Create the namespace and veth pair and address both ends.

    IPv6 is disabled on both ends so not even link-local router solicitations
    are sent; the hosts get no default route.
    """
    run(["ip", "netns", "add", host.netns])
    run(
        [
            "ip",
            "netns",
            "exec",
            host.netns,
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]
    )
    run(
        [
            "ip",
            "link",
            "add",
            host.veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.netns,
        ]
    )
    Path(f"/proc/sys/net/ipv6/conf/{host.veth}/disable_ipv6").write_text("1\n")
    run(["ip", "addr", "add", f"{host.gateway}/30", "dev", host.veth])
    run(["ip", "link", "set", host.veth, "up"])
    run(["ip", "-n", host.netns, "addr", "add", f"{host.address}/30", "dev", "eth0"])
    run(["ip", "-n", host.netns, "link", "set", "eth0", "up"])
    run(["ip", "-n", host.netns, "link", "set", "lo", "up"])


def teardown_network(netns: str, veth: str | None) -> None:
    """Delete the veth (if still there) and the namespace; both idempotent."""
    if veth and link_exists(veth):
        run(["ip", "link", "del", veth], check=False)
    if netns_exists(netns):
        run(["ip", "netns", "del", netns], check=False)
        if (NETNS_DIR / netns).exists():
            # A stale bind mount or file from a crashed ip(8): remove by hand.
            run(["umount", "-l", str(NETNS_DIR / netns)], check=False)
            with contextlib.suppress(OSError):
                (NETNS_DIR / netns).unlink()


# --------------------------------------------------------------------------
# Mounts.
# --------------------------------------------------------------------------


def mounts_under(prefix: Path) -> list[str]:
    """Mount points at or below prefix in our mount namespace, deepest first."""
    found = []
    pre = str(prefix).rstrip("/")
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == pre or point.startswith(pre + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_under(prefix: Path) -> None:
    """Lazily unmount anything left below prefix (normally nothing is)."""
    for point in mounts_under(prefix):
        run(["umount", "-l", point], check=False)


# --------------------------------------------------------------------------
# Keys and the per-host overlay upper directory.
# --------------------------------------------------------------------------


def ensure_keypair(state: Path) -> Path:
    """Generate the shared client keypair once; return the private key path."""
    key = state / "id_ed25519"
    with flock(state / "locks" / "keygen.lock"):
        if not key.exists():
            key.with_suffix(".pub").unlink(missing_ok=True)
            ssh_keygen(key, "quantshift-testbed")
    return key


def ssh_keygen(key: Path, comment: str) -> None:
    """A new passphrase-less ed25519 keypair at key and key.pub."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])


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
    _mkdir(upper, 0o755)
    _mkdir(upper / "etc", 0o755)
    _mkdir(upper / "etc/ssh", 0o755)
    _mkdir(upper / "root", 0o700)
    _mkdir(upper / "root/.ssh", 0o700)
    _write(upper / "root/.ssh/authorized_keys", pubkey.strip() + "\n", 0o600)
    _write(upper / "etc/hostname", host.name + "\n")
    _write(
        upper / "etc/hosts",
        "127.0.0.1\tlocalhost\n"
        f"127.0.1.1\t{host.name}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n",
    )
    _write(upper / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    hostkey = upper / "etc/ssh/ssh_host_ed25519_key"
    ssh_keygen(hostkey, f"root@{host.name}")
    hostpub = hostkey.with_name(hostkey.name + ".pub").read_text().split()
    _write(hdir / "known_hosts", f"{host.address} {hostpub[0]} {hostpub[1]}\n")


# --------------------------------------------------------------------------
# Readiness.
# --------------------------------------------------------------------------


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
                failed = run(
                    ssh_argv(hdir, host, "systemctl", "--failed", "--no-legend"),
                    check=False,
                    timeout=15,
                ).stdout.strip()
                log(f"{host.name} is degraded; failed units: {failed or '?'}")
            return status
        last = status or proc.stderr.strip() or f"ssh exit {proc.returncode}"
        time.sleep(0.5)
    raise TestbedError(f"{host.name} not ready after {timeout:g} s (last: {last})")


# --------------------------------------------------------------------------
# Commands.
# --------------------------------------------------------------------------


def validate(name: str, index: int) -> None:
    """Names become hostnames and netns names; indexes become addresses."""
    if not NAME_RE.match(name):
        raise TestbedError(
            f"invalid host name {name!r}: lowercase letters, digits and '-', at most 30 characters"
        )
    if not MIN_INDEX <= index <= MAX_INDEX:
        raise TestbedError(f"index {index} out of range {MIN_INDEX}..{MAX_INDEX}")


def cmd_rootfs(args: argparse.Namespace) -> int:
    """Build (or confirm) the cached root filesystem."""
    built = build_rootfs(args.cache)
    if not built:
        log(f"cached rootfs at {args.cache} is current")
    print(json.dumps({"rootfs": str(args.cache), "built": built}))
    return 0


def _nspawn_argv(host: Host, upper: Path) -> list[str]:
    return [
        "systemd-nspawn",
        "-q",
        "-D",
        host.rootfs,
        f"--overlay={host.rootfs}:{upper}:/",
        "--register=no",
        "--keep-unit",
        "-b",
        f"--machine={host.name}",
        f"--network-namespace-path={NETNS_DIR / host.netns}",
        f"--setenv={ENV_MARKER}={host.name}",
        "--console=read-only",
        "--link-journal=no",
    ]


def cmd_up(args: argparse.Namespace) -> int:
    """Boot one host and print its Molecule instance config as JSON."""
    name, index, state = args.name, args.index, args.state
    validate(name, index)
    build_rootfs(args.cache)
    state.mkdir(parents=True, exist_ok=True)
    hdir = host_dir(state, name)

    with flock(host_lock(state, name)):
        existing = load_host(state, name)
        if (
            existing
            and existing.pid
            and is_our_nspawn(existing.pid, name)
            and alive(existing.pid)
            and _starttime(existing.pid) == existing.starttime
        ):
            if existing.index != index:
                raise TestbedError(f"{name} is running with index {existing.index}, not {index}")
            wait_ready(hdir, existing, args.timeout)
            log(f"{name} already running")
            print(json.dumps(instance_config(existing)))
            return 0
        if (
            hdir.exists()
            or netns_exists(NETNS_PREFIX + name)
            or running_nspawn_pids(name)
            or container_inits(name)
        ):
            log(f"cleaning up leftovers of a previous {name}")
            down_host(state, name)

        if args.key:
            pub = Path(args.key)
            identity = pub.with_suffix("") if pub.suffix == ".pub" else pub
            if not pub.is_file() or not identity.is_file():
                raise TestbedError(
                    f"--key needs a public key file with its private key beside it "
                    f"({pub}, {identity})"
                )
        else:
            identity = ensure_keypair(state)
            pub = identity.with_name(identity.name + ".pub")
        host = Host(
            name=name, index=index, rootfs=str(args.cache), identity_file=str(identity.resolve())
        )

        with flock(state / "locks" / "network.lock"):
            for other in known_hosts(state):
                rec = load_host(state, other)
                if other != name and rec and rec.index == index:
                    raise TestbedError(f"index {index} is already used by host {other}")
            if link_exists(host.veth):
                raise TestbedError(f"link {host.veth} already exists (index {index} in use?)")
            check_address_free(host)
            save_host(state, host)  # first, so down can undo a half-failed up
            try:
                setup_network(host)
            except TestbedError:
                down_host(state, name)
                raise

        started = time.monotonic()
        try:
            prepare_upper(hdir, host, pub.read_text())
            console = hdir / "console.log"
            env = dict(os.environ, SYSTEMD_NSPAWN_LOCK="0")
            with open(console, "w") as out:
                proc = subprocess.Popen(
                    _nspawn_argv(host, hdir / "upper"),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    env=env,
                )
            host.pid = proc.pid
            host.starttime = _starttime(proc.pid)
            host.phase = "booting"
            save_host(state, host)
            wait_ready(hdir, host, args.timeout)
        except BaseException as exc:
            tail = ""
            with contextlib.suppress(OSError):
                lines = (hdir / "console.log").read_text(errors="replace").splitlines()
                tail = "\n".join(lines[-25:])
            if tail and not isinstance(exc, KeyboardInterrupt):
                log(f"last console lines of {name}:\n{tail}")
            if args.keep_on_failure:
                log(f"leaving {name} for inspection; run 'testbed.py down {name}'")
            else:
                down_host(state, name)
            if isinstance(exc, (TestbedError, OSError)):
                raise TestbedError(f"up {name} failed: {exc}") from exc
            raise
        host.phase = "running"
        save_host(state, host)
        log(f"{name} up at {host.address} in {time.monotonic() - started:.1f} s")
        print(json.dumps(instance_config(host)))
    return 0


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
    teardown_network(NETNS_PREFIX + name, host.veth if host else None)
    safe_rmtree(hdir)


def cmd_down(args: argparse.Namespace) -> int:
    """Remove one host; succeeds if it is already gone."""
    if not NAME_RE.match(args.name):
        raise TestbedError(f"invalid host name {args.name!r}")
    with flock(host_lock(args.state, args.name)):
        down_host(args.state, args.name)
    log(f"{args.name} is down")
    return 0


def _orphans(state: Path) -> tuple[list[str], list[str]]:
    """Namespaces (qs-*) and veths (qs-h*) that no host record explains."""
    names = set(known_hosts(state))
    netns = (
        sorted(p.name[len(NETNS_PREFIX) :] for p in NETNS_DIR.glob(NETNS_PREFIX + "*"))
        if NETNS_DIR.is_dir()
        else []
    )
    recorded = {h.veth for n in names if (h := load_host(state, n))}
    links = sorted(
        p.name for p in Path("/sys/class/net").glob(VETH_PREFIX + "*") if p.name not in recorded
    )
    return [n for n in netns if n not in names], links


def cmd_down_all(args: argparse.Namespace) -> int:
    """Remove every host in the state dir, plus leftovers from crashed runs."""
    state: Path = args.state
    orphan_ns, orphan_links = _orphans(state)
    names = set(known_hosts(state)) | set(orphan_ns)
    for pid in running_nspawn_pids():
        for arg in _cmdline(pid):
            if arg.startswith("--machine="):
                names.add(arg.split("=", 1)[1])
    names |= set(container_inits().values())
    for name in sorted(names):
        if NAME_RE.match(name):
            with flock(host_lock(state, name)):
                down_host(state, name)
        else:
            teardown_network(NETNS_PREFIX + name, None)
    for link in orphan_links:
        if link_exists(link):
            run(["ip", "link", "del", link], check=False)
    unmount_under(state / "hosts")
    log(f"down-all removed {len(names)} host(s)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print one JSON object per recorded host, with whether it runs."""
    rows: list[dict[str, Any]] = []
    for name in known_hosts(args.state):
        host = load_host(args.state, name)
        if host is None:
            rows.append({"name": name, "status": "broken (no host.json)"})
            continue
        running = bool(host.pid and is_our_nspawn(host.pid, name) and alive(host.pid))
        rows.append(
            {
                "name": name,
                "index": host.index,
                "address": host.address,
                "pid": host.pid,
                "phase": host.phase,
                "status": "running" if running else "stopped",
            }
        )
    print(json.dumps(rows, indent=2))
    return 0


def cmd_ssh(args: argparse.Namespace) -> int:
    """Open a shell (or run a command) on a host, checking its own host key.

    Why: host keys are generated per ``up``, so a plain ``ssh root@ADDR``
    would trip over a stale entry in ~/.ssh/known_hosts after a re-create.
    """
    host = load_host(args.state, args.name)
    if host is None:
        raise TestbedError(f"no host {args.name!r} in {args.state}")
    argv = ssh_argv(host_dir(args.state, args.name), host, *args.remote)
    if not args.remote:
        argv.insert(1, "-t")
    os.execvp(argv[0], argv)


def leftovers(
    state: Path, names: list[str] | None = None, indexes: list[int] | None = None
) -> list[str]:
    """Everything this tool may have left behind, as human-readable lines.

    Without names and indexes every qs-* trace on the machine counts. With
    them only those hosts' traces do, so a run proves it cleaned up after
    itself without failing on another run's hosts (a benchmark or a second
    scenario on the same machine).
    """
    if names is None and indexes is None:
        return _all_leftovers(state)
    found: list[str] = []
    for name in names or []:
        found += [
            f"process: systemd-nspawn pid {pid} ({' '.join(_cmdline(pid))})"
            for pid in running_nspawn_pids(name)
        ]
        found += [f"process: container init pid {pid} of {name}" for pid in container_inits(name)]
        netns = NETNS_DIR / (NETNS_PREFIX + name)
        if netns.exists():
            found.append(f"namespace: {netns.name}")
        found += [f"mount: {m}" for m in mounts_under(netns)]
        found += [f"mount: {m}" for m in mounts_under(host_dir(state, name))]
        if host_dir(state, name).exists():
            found.append(f"host dir: {host_dir(state, name)}")
    for index in indexes or []:
        link = Path("/sys/class/net") / f"{VETH_PREFIX}{index}"
        if link.exists():
            found.append(f"link: {link.name}")
    return sorted(set(found))


def _all_leftovers(state: Path) -> list[str]:
    """Every trace of any host of this tool on the machine."""
    found = [
        f"process: systemd-nspawn pid {pid} ({' '.join(_cmdline(pid))})"
        for pid in running_nspawn_pids()
    ]
    found += [
        f"process: container init pid {pid} of {name} (its nspawn is gone)"
        for pid, name in container_inits().items()
        if not running_nspawn_pids(name)
    ]
    if NETNS_DIR.is_dir():
        found += [f"namespace: {p.name}" for p in sorted(NETNS_DIR.glob(NETNS_PREFIX + "*"))]
    found += [f"link: {p.name}" for p in sorted(Path("/sys/class/net").glob(VETH_PREFIX + "*"))]
    found += [f"mount: {m}" for m in mounts_under(state)]
    found += [
        f"mount: {m}" for m in mounts_under(NETNS_DIR) if Path(m).name.startswith(NETNS_PREFIX)
    ]
    found += [f"host dir: {host_dir(state, n)}" for n in known_hosts(state)]
    return sorted(set(found))


def cmd_check_clean(args: argparse.Namespace) -> int:
    """Exit 1 listing leftovers, or 0 when nothing of ours remains."""
    for name in args.host or []:
        if not NAME_RE.match(name):
            raise TestbedError(f"invalid host name {name!r}")
    found = leftovers(args.state, args.host, args.index)
    if found:
        print("testbed: not clean:")
        for line in found:
            print(f"  {line}")
        return 1
    print("testbed: clean")
    return 0


def parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    env_cache = os.environ.get("QS_TESTBED_CACHE")
    env_state = os.environ.get("QS_TESTBED_STATE")
    cache_default = Path(env_cache) if env_cache else DEFAULT_CACHE
    state_default = Path(env_state) if env_state else DEFAULT_STATE

    def add_cache(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--cache",
            type=Path,
            default=cache_default,
            help=f"rootfs directory (env QS_TESTBED_CACHE; default {DEFAULT_CACHE})",
        )

    def add_state(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--state",
            type=Path,
            default=state_default,
            help=f"state directory (env QS_TESTBED_STATE; default {DEFAULT_STATE})",
        )

    top = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("rootfs", help="build and cache the Debian root filesystem")
    add_cache(p)
    p.set_defaults(func=cmd_rootfs)

    p = sub.add_parser("up", help="boot one host and print its instance config")
    p.add_argument("name", help="host name (also hostname and netns qs-NAME)")
    p.add_argument("index", type=int, help=f"{MIN_INDEX}..{MAX_INDEX}: address 10.231.INDEX.2")
    p.add_argument("--key", help="public key to authorize (private key must sit beside it)")
    p.add_argument("--timeout", type=float, default=BOOT_TIMEOUT, help="boot timeout, seconds")
    p.add_argument(
        "--keep-on-failure",
        action="store_true",
        help="leave a host that failed to boot, for inspection",
    )
    add_cache(p)
    add_state(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop and remove one host (idempotent)")
    p.add_argument("name")
    add_state(p)
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("down-all", help="stop and remove every host and leftover")
    add_state(p)
    p.set_defaults(func=cmd_down_all)

    p = sub.add_parser("list", help="list recorded hosts")
    add_state(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("ssh", help="ssh to a host as root (strict host key check)")
    p.add_argument("name")
    p.add_argument("remote", nargs=argparse.REMAINDER, help="command to run (default: shell)")
    add_state(p)
    p.set_defaults(func=cmd_ssh)

    p = sub.add_parser("check-clean", help="fail if anything of ours is left behind")
    p.add_argument(
        "--host",
        action="append",
        metavar="NAME",
        help="only check this host's traces (repeatable; default: every qs-* trace)",
    )
    p.add_argument(
        "--index",
        action="append",
        type=int,
        metavar="N",
        help="only check the veth qs-hN (repeatable; with --host)",
    )
    add_state(p)
    p.set_defaults(func=cmd_check_clean)
    return top


def _terminate(signum: int, frame: object) -> None:
    """Turn SIGTERM (Ansible async timeout, CI cancel) into the Ctrl-C path."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, refuse non-root, run, turn errors into messages."""
    args = parser().parse_args(argv)
    require_root()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args))
    except TestbedError as exc:
        die(str(exc))
    except KeyboardInterrupt:
        die("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
