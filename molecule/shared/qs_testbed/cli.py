"""The command line: ``rootfs``, ``up``, ``down``, ``down-all``, ``list``, ``ssh``,
``check-clean``.

Why its contract is fixed: Molecule's create/destroy playbooks, the Makefile
and the self-test read stdout as JSON (``rootfs``, ``up``, ``list``), the
stderr words ``already running`` and ``stopping``, and the exit codes (0 ok,
1 failure or not clean, 2 not root or bad usage, 130 interrupted).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __doc__ as package_doc
from .cleanup import down_all, leftovers
from .common import TestbedError, die, flock, log, require_root
from .host import BOOT_TIMEOUT, BootOptions, down_host, ssh_argv, up_host
from .processes import alive, is_our_nspawn
from .rootfs import DEFAULT_CACHE, build_rootfs
from .state import (
    DEFAULT_STATE,
    MAX_INDEX,
    MIN_INDEX,
    check_name,
    host_dir,
    host_lock,
    instance_config,
    known_hosts,
    load_host,
    validate,
)


def cmd_rootfs(args: argparse.Namespace) -> int:
    """Build (or confirm) the cached root filesystem."""
    built = build_rootfs(args.cache)
    if not built:
        log(f"cached rootfs at {args.cache} is current")
    print(json.dumps({"rootfs": str(args.cache), "built": built}))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Boot one host and print its Molecule instance config as JSON."""
    validate(args.name, args.index)
    build_rootfs(args.cache)
    args.state.mkdir(parents=True, exist_ok=True)
    opts = BootOptions(args.cache, args.key, args.timeout, args.keep_on_failure)
    with flock(host_lock(args.state, args.name)):
        host = up_host(args.state, args.name, args.index, opts)
        print(json.dumps(instance_config(host)))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Remove one host; succeeds if it is already gone."""
    check_name(args.name)
    with flock(host_lock(args.state, args.name)):
        down_host(args.state, args.name)
    log(f"{args.name} is down")
    return 0


def cmd_down_all(args: argparse.Namespace) -> int:
    """Remove every host in the state dir, plus leftovers from crashed runs."""
    log(f"down-all removed {down_all(args.state)} host(s)")
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


def cmd_check_clean(args: argparse.Namespace) -> int:
    """Exit 1 listing leftovers, or 0 when nothing of ours remains."""
    for name in args.host or []:
        check_name(name)
    found = leftovers(args.state, args.host, args.index)
    if found:
        print("testbed: not clean:")
        for line in found:
            print(f"  {line}")
        return 1
    print("testbed: clean")
    return 0


def _add_dir(p: argparse.ArgumentParser, flag: str, what: str, default: Path) -> None:
    """--cache or --state: a directory, from QS_TESTBED_<FLAG> or the default."""
    var = f"QS_TESTBED_{flag.upper()}"
    value = os.environ.get(var)
    p.add_argument(
        f"--{flag}",
        type=Path,
        default=Path(value) if value else default,
        help=f"{what} directory (env {var}; default {default})",
    )


def _add_cache(p: argparse.ArgumentParser) -> None:
    """--cache: where the shared rootfs lives."""
    _add_dir(p, "cache", "rootfs", DEFAULT_CACHE)


def _add_state(p: argparse.ArgumentParser) -> None:
    """--state: where host records, keys and upper dirs live."""
    _add_dir(p, "state", "state", DEFAULT_STATE)


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    func: Callable[[argparse.Namespace], int],
    help_text: str,
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` running ``func``; the caller adds its arguments."""
    p = sub.add_parser(name, help=help_text)
    p.set_defaults(func=func)
    return p


def _add_up(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """up NAME INDEX [--key] [--timeout] [--keep-on-failure]."""
    p = _command(sub, "up", cmd_up, "boot one host and print its instance config")
    p.add_argument("name", help="host name (also hostname and netns qs-NAME)")
    p.add_argument("index", type=int, help=f"{MIN_INDEX}..{MAX_INDEX}: address 10.231.INDEX.2")
    p.add_argument("--key", help="public key to authorize (private key must sit beside it)")
    p.add_argument("--timeout", type=float, default=BOOT_TIMEOUT, help="boot timeout, seconds")
    p.add_argument(
        "--keep-on-failure",
        action="store_true",
        help="leave a host that failed to boot, for inspection",
    )
    _add_cache(p)
    _add_state(p)


def _add_check_clean(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """check-clean [--host NAME]... [--index N]..."""
    p = _command(sub, "check-clean", cmd_check_clean, "fail if anything of ours is left behind")
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
    _add_state(p)


def parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    top = argparse.ArgumentParser(description=(package_doc or "").split("\n", 1)[0])
    sub = top.add_subparsers(dest="command", required=True)
    _add_cache(_command(sub, "rootfs", cmd_rootfs, "build and cache the Debian root filesystem"))
    _add_up(sub)
    p = _command(sub, "down", cmd_down, "stop and remove one host (idempotent)")
    p.add_argument("name")
    _add_state(p)
    _add_state(_command(sub, "down-all", cmd_down_all, "stop and remove every host and leftover"))
    _add_state(_command(sub, "list", cmd_list, "list recorded hosts"))
    p = _command(sub, "ssh", cmd_ssh, "ssh to a host as root (strict host key check)")
    p.add_argument("name")
    p.add_argument("remote", nargs=argparse.REMAINDER, help="command to run (default: shell)")
    _add_state(p)
    _add_check_clean(sub)
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
