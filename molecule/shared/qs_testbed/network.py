"""One network namespace and veth pair per host, and the addresses on it.

Why this shape: a host ``NAME`` with index ``N`` lives in namespace
``qs-NAME`` behind the pair ``qs-hN`` (controller, ``10.231.N.1/30``) and
``eth0`` (host, ``10.231.N.2/30``). Those are the only addresses this tool
configures or talks to; the hosts get no default route and no IPv6, so
nothing they do leaves the pair.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from pathlib import Path

from .common import TestbedError, run

NETNS_PREFIX = "qs-"
NETNS_DIR = Path("/run/netns")
#: Controller-side veth names are qs-h<INDEX>; the peer becomes eth0 inside
#: the host's namespace. Index-based names always fit IFNAMSIZ (15 chars).
VETH_PREFIX = "qs-h"
SUBNET_PREFIX = "10.231"
SYS_NET = Path("/sys/class/net")


def netns_name(name: str) -> str:
    """Network namespace of host ``name``: qs-NAME."""
    return NETNS_PREFIX + name


def veth_name(index: int) -> str:
    """Controller-side veth of index ``index``: qs-h<INDEX>."""
    return f"{VETH_PREFIX}{index}"


def host_address(index: int) -> str:
    """The host's own address, inside its namespace."""
    return f"{SUBNET_PREFIX}.{index}.2"


def gateway_address(index: int) -> str:
    """The controller's address on the pair."""
    return f"{SUBNET_PREFIX}.{index}.1"


def netns_exists(netns: str) -> bool:
    """True if /run/netns/NAME exists (ip netns add creates it)."""
    return (NETNS_DIR / netns).exists()


def link_exists(link: str) -> bool:
    """True if a link of that name exists in the root namespace."""
    return (SYS_NET / link).exists()


def our_netns() -> list[str]:
    """Host names of every qs-* namespace on the machine, whoever made it."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name[len(NETNS_PREFIX) :] for p in NETNS_DIR.glob(NETNS_PREFIX + "*"))


def our_links() -> list[str]:
    """Every qs-h* link in the controller namespace."""
    return sorted(p.name for p in SYS_NET.glob(VETH_PREFIX + "*"))


def root_ns_addresses() -> list[tuple[str, ipaddress.IPv4Interface]]:
    """(link, address) of every IPv4 address in the controller namespace."""
    proc = run(["ip", "-j", "-4", "addr", "show"])
    out = []
    for link in json.loads(proc.stdout or "[]"):
        for info in link.get("addr_info", []):
            iface = ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
            out.append((link.get("ifname", "?"), iface))
    return out


def check_address_free(index: int) -> None:
    """Refuse if 10.231.INDEX.0/30 is already used by anything but our veth.

    This guarantees we only ever talk to addresses in namespaces we created.
    """
    net = ipaddress.IPv4Network(f"{SUBNET_PREFIX}.{index}.0/30")
    for link, iface in root_ns_addresses():
        if iface.network.overlaps(net) and link != veth_name(index):
            raise TestbedError(f"{net} is already used on link {link}; pick another index")


def setup_network(netns: str, index: int) -> None:
    """Create the namespace and veth pair and address both ends.

    IPv6 is disabled on both ends so not even link-local router solicitations
    are sent; the hosts get no default route.
    """
    veth = veth_name(index)
    run(["ip", "netns", "add", netns])
    run(
        [
            *("ip", "netns", "exec", netns, "sysctl", "-q", "-w"),
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]
    )
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
    Path(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6").write_text("1\n")
    run(["ip", "addr", "add", f"{gateway_address(index)}/30", "dev", veth])
    run(["ip", "link", "set", veth, "up"])
    run(["ip", "-n", netns, "addr", "add", f"{host_address(index)}/30", "dev", "eth0"])
    run(["ip", "-n", netns, "link", "set", "eth0", "up"])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])


def delete_link(link: str) -> None:
    """Delete a link if it is still there (its peer goes with it)."""
    if link_exists(link):
        run(["ip", "link", "del", link], check=False)


def teardown_network(netns: str, veth: str | None) -> None:
    """Delete the veth (if still there) and the namespace; both idempotent."""
    if veth:
        delete_link(veth)
    if netns_exists(netns):
        run(["ip", "netns", "del", netns], check=False)
        if (NETNS_DIR / netns).exists():
            # A stale bind mount or file from a crashed ip(8): remove by hand.
            run(["umount", "-l", str(NETNS_DIR / netns)], check=False)
            with contextlib.suppress(OSError):
                (NETNS_DIR / netns).unlink()
