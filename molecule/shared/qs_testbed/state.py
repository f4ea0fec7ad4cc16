"""What the test bed remembers about its hosts, under the state directory.

Why a record at all: ``down`` must undo exactly what ``up`` made (which veth,
which nspawn), also from another process and after a crash. ``host.json`` is
written before anything is created and replaced atomically, so a half-failed
``up`` always leaves enough for ``down``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .common import TestbedError
from .network import host_address, netns_name, veth_name

DEFAULT_STATE = Path("/run/quantshift-testbed")
MIN_INDEX, MAX_INDEX = 1, 60
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,28}[a-z0-9])?$")


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
        return netns_name(self.name)

    @property
    def veth(self) -> str:
        """Controller-side veth name: qs-h<INDEX>."""
        return veth_name(self.index)

    @property
    def address(self) -> str:
        """The host's own address, inside its namespace."""
        return host_address(self.index)


def check_name(name: str) -> None:
    """Refuse a name that cannot be a hostname and a netns name."""
    if not NAME_RE.match(name):
        raise TestbedError(f"invalid host name {name!r}")


def validate(name: str, index: int) -> None:
    """Names become hostnames and netns names; indexes become addresses."""
    if not NAME_RE.match(name):
        raise TestbedError(
            f"invalid host name {name!r}: lowercase letters, digits and '-', at most 30 characters"
        )
    if not MIN_INDEX <= index <= MAX_INDEX:
        raise TestbedError(f"index {index} out of range {MIN_INDEX}..{MAX_INDEX}")


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
