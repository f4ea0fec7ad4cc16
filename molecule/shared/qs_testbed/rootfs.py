"""The shared Debian root filesystem: recipe, debootstrap build, cache.

Why built once and cached: every host boots on an overlay whose lower layer is
this one tree, never modified, so repeated runs skip the ~90 s build and
sixteen hosts do not cost sixteen copies of Debian. A build goes to
``rootfs.partial.PID`` and is renamed into place only when complete, with a
marker recording the recipe: an interrupted build is never mistaken for a good
cache, and a changed recipe triggers a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from .common import TestbedError, flock, log, run, write_file
from .mirror import apt_proxy_env, find_debian_mirror
from .mounts import safe_rmtree
from .processes import run_group, running_nspawn_pids

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

DEFAULT_CACHE = Path("/var/cache/quantshift-testbed/rootfs")
MARKER = "etc/quantshift-testbed-rootfs.json"
#: /etc/hosts without the host's own name; each host's upper dir adds it.
BASE_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


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


def rootfs_is_current(root: Path) -> bool:
    """True when ``root`` is a completed build of the current recipe."""
    marker = root / MARKER
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("recipe_hash") == recipe_hash()


def customize_rootfs(root: Path) -> None:
    """Make the debootstrapped tree boot cleanly as a container.

    Reasons per step: sshd accepts only keys for root (Ansible connects as
    root with a generated key); host keys are generated per host at ``up``
    so hosts are distinguishable; apt timers and gettys are masked because
    they either need the network or waste memory per host; the journal is
    kept in memory and small, to keep hosts cheap.
    """
    write_file(
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
    write_file(root / "etc/hosts", BASE_HOSTS)
    write_file(root / "etc/default/locale", "LANG=C.UTF-8\n")
    write_file(
        root / "etc/systemd/journald.conf.d/10-quantshift-testbed.conf",
        "[Journal]\nStorage=volatile\nRuntimeMaxUse=8M\n",
    )
    # Every host gets its own machine-id in its upper dir.
    write_file(root / "etc/machine-id", "", 0o444)
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
        dbus_id.symlink_to("/etc/machine-id")
    (root / "root").chmod(0o700)
    run(["systemctl", f"--root={root}", "enable", *ENABLED_UNITS])
    run(["systemctl", f"--root={root}", "mask", *MASKED_UNITS])
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


def _sibling(cache: Path, suffix: str) -> Path:
    """A path next to the cache: rootfs.lock, rootfs.partial.PID, ..."""
    return cache.with_name(cache.name + suffix)


def _clear_for_build(cache: Path) -> None:
    """Drop interrupted builds; refuse to replace what is not ours or in use."""
    for stale in [
        *cache.parent.glob(cache.name + ".partial.*"),
        *cache.parent.glob(cache.name + ".old.*"),
    ]:
        log(f"removing interrupted build {stale}")
        safe_rmtree(stale)
    if not cache.exists():
        return
    if not (cache / MARKER).exists() and any(cache.iterdir()):
        raise TestbedError(
            f"{cache} exists but is not a testbed rootfs (no {MARKER}); "
            "remove it yourself or choose another --cache"
        )
    if running_nspawn_pids():
        raise TestbedError(
            f"{cache} is outdated but test hosts are running; run 'testbed.py down-all' first"
        )


def _debootstrap(partial: Path, build_log: Path) -> str:
    """Run debootstrap into ``partial`` with apt's mirror and proxy; the mirror."""
    mirror, keyring = find_debian_mirror(SUITE)
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
    with open(build_log, "w") as out:
        returncode = run_group(argv, out, apt_proxy_env())
    if returncode != 0:
        tail = build_log.read_text(errors="replace").splitlines()[-15:]
        raise TestbedError("debootstrap failed:\n" + "\n".join(tail))
    return mirror


def _write_marker(root: Path, mirror: str, started: float) -> None:
    """Record the recipe in the finished tree: the proof it is complete."""
    marker = {
        "recipe_hash": recipe_hash(),
        "recipe": recipe(),
        "mirror": mirror,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.monotonic() - started, 1),
    }
    write_file(root / MARKER, json.dumps(marker, indent=2) + "\n")


def _swap_in(partial: Path, cache: Path) -> None:
    """Rename the finished build into place, then delete the outdated tree."""
    if not cache.exists():
        partial.rename(cache)
        return
    old = _sibling(cache, f".old.{os.getpid()}")
    cache.rename(old)
    partial.rename(cache)
    safe_rmtree(old)


def build_rootfs(cache: Path) -> bool:
    """Ensure a current rootfs exists at ``cache``; return True if built now."""
    with flock(_sibling(cache, ".lock")):
        if rootfs_is_current(cache):
            return False
        _clear_for_build(cache)
        partial = _sibling(cache, f".partial.{os.getpid()}")
        started = time.monotonic()
        try:
            mirror = _debootstrap(partial, _sibling(cache, ".build.log"))
            customize_rootfs(partial)
            _write_marker(partial, mirror, started)
            _swap_in(partial, cache)
        except BaseException:
            safe_rmtree(partial)
            raise
        log(f"rootfs ready at {cache} in {time.monotonic() - started:.0f} s")
        return True
