"""Finding and removing everything the test bed may have left on the machine.

Why beyond ``down NAME``: a crashed run can leave namespaces, veths and
container processes that no host record names any more. ``down-all`` finds
them by their qs-* names and markers; ``check-clean`` lists them so a run can
prove it left nothing behind, scoped to its own hosts when others (a
benchmark, a second scenario) share the machine.
"""

from __future__ import annotations

from pathlib import Path

from .common import flock
from .host import down_host
from .mounts import mounts_under, unmount_under
from .network import (
    NETNS_DIR,
    NETNS_PREFIX,
    delete_link,
    link_exists,
    netns_name,
    our_links,
    our_netns,
    teardown_network,
    veth_name,
)
from .processes import cmdline, container_inits, nspawn_machines, running_nspawn_pids
from .state import NAME_RE, host_dir, host_lock, known_hosts, load_host


def _orphans(state: Path) -> tuple[list[str], list[str]]:
    """Namespaces (qs-*) and veths (qs-h*) that no host record explains."""
    names = set(known_hosts(state))
    recorded = {h.veth for n in names if (h := load_host(state, n))}
    links = [link for link in our_links() if link not in recorded]
    return [n for n in our_netns() if n not in names], links


def down_all(state: Path) -> int:
    """Remove every host in the state dir and every trace of a crashed run.

    Returns how many hosts (recorded or found) were taken down.
    """
    orphan_ns, orphan_links = _orphans(state)
    names = set(known_hosts(state)) | set(orphan_ns) | nspawn_machines()
    names |= set(container_inits().values())
    for name in sorted(names):
        if NAME_RE.match(name):
            with flock(host_lock(state, name)):
                down_host(state, name)
        else:
            teardown_network(netns_name(name), None)
    for link in orphan_links:
        delete_link(link)
    unmount_under(state / "hosts")
    return len(names)


def _nspawn_lines(name: str | None = None) -> list[str]:
    """One line per live nspawn of ours (of ``name``, or all)."""
    return [
        f"process: systemd-nspawn pid {pid} ({' '.join(cmdline(pid))})"
        for pid in running_nspawn_pids(name)
    ]


def _host_leftovers(state: Path, name: str) -> list[str]:
    """Traces of one host: processes, namespace, mounts, host dir."""
    found = _nspawn_lines(name)
    found += [f"process: container init pid {pid} of {name}" for pid in container_inits(name)]
    netns = NETNS_DIR / netns_name(name)
    if netns.exists():
        found.append(f"namespace: {netns.name}")
    found += [f"mount: {m}" for m in mounts_under(netns)]
    found += [f"mount: {m}" for m in mounts_under(host_dir(state, name))]
    if host_dir(state, name).exists():
        found.append(f"host dir: {host_dir(state, name)}")
    return found


def _all_leftovers(state: Path) -> list[str]:
    """Every trace of any host of this tool on the machine."""
    found = _nspawn_lines()
    found += [
        f"process: container init pid {pid} of {name} (its nspawn is gone)"
        for pid, name in container_inits().items()
        if not running_nspawn_pids(name)
    ]
    found += [f"namespace: {netns_name(n)}" for n in our_netns()]
    found += [f"link: {link}" for link in our_links()]
    found += [f"mount: {m}" for m in mounts_under(state)]
    found += [
        f"mount: {m}" for m in mounts_under(NETNS_DIR) if Path(m).name.startswith(NETNS_PREFIX)
    ]
    found += [f"host dir: {host_dir(state, n)}" for n in known_hosts(state)]
    return sorted(set(found))


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
        found += _host_leftovers(state, name)
    for index in indexes or []:
        if link_exists(veth_name(index)):
            found.append(f"link: {veth_name(index)}")
    return sorted(set(found))
