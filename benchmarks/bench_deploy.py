"""Deploy fan-out: retrain.yml on real nspawn hosts against the old runbook.

Not a test (needs root, the test-bed rootfs and `make wheelhouse`; several
minutes). It boots hosts with molecule/shared/testbed.py, provisions them with
site.yml (not timed), then measures in one run:

1. retrain.yml on 2 hosts (primary + standby);
2. a bare-shell equivalent of the old runbook on the same 2 hosts: train on the
   primary, cp to a backup, scp the model to the standby, systemctl restart on
   both (no gate, no checksum, no health check);
3. retrain.yml on N hosts (default 16: 1 primary + 15 standbys).

and prints the ratios against the goals (2 hosts <= 3x the bare shell,
N hosts <= 2x 2 hosts). Every host is shut down at the end.

    sudo .venv/bin/python benchmarks/bench_deploy.py [--hosts 16] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TESTBED = REPO / "molecule/shared/testbed.py"
BIN = Path(sys.executable).parent
FIRST_INDEX = 40  # 10.231.40.x upwards: away from the Molecule scenario's 1 and 2


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, capture_output=True, check=False, **kw)  # type: ignore[call-overload]


def boot(names: list[str], first: int, booted: list[str]) -> dict[str, dict]:
    """Boot names at indexes first, first+1, ...; every started name lands in booted."""
    procs = {n: subprocess.Popen([sys.executable, str(TESTBED), "up", n,
                                  str(FIRST_INDEX + first + i)], stdout=subprocess.PIPE, text=True)
             for i, n in enumerate(names)}
    booted += names  # even a failed `up` may leave traces that `down` removes
    out = {}
    for n, p in procs.items():
        stdout, _ = p.communicate(timeout=300)
        if p.returncode != 0:
            raise SystemExit(f"could not boot {n}")
        out[n] = json.loads(stdout.strip().splitlines()[-1])
    return out


def report(label: str, seconds: float, busy: float | None = None) -> None:
    """Print a figure as soon as it is measured (a later failure keeps it).

    With the machine's CPU busy share during the run: every test host shares
    the controller's cores, so near 100 % the fan-out is CPU-bound here, which
    a fleet of separate machines is not.
    """
    share = f"{busy:7.0%}" if busy is not None else ""
    print(f"{label:44}{seconds:9.1f}{share}", flush=True)


def inventory(hosts: dict[str, dict], path: Path) -> Path:
    scenario = yaml.safe_load((REPO / "molecule/default/molecule.yml").read_text())
    gv = scenario["provisioner"]["inventory"]["group_vars"]["quantshift"]
    gv = {k: (v.replace("${MOLECULE_PROJECT_DIRECTORY}", str(REPO))
              .replace("${MOLECULE_EPHEMERAL_DIRECTORY}", str(path.parent))
              if isinstance(v, str) else v) for k, v in gv.items()}
    names = list(hosts)

    def hv(n: str) -> dict:
        h = hosts[n]
        return {"ansible_host": h["address"], "ansible_user": "root",
                "ansible_ssh_private_key_file": h["identity_file"],
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
                                           "-o UserKnownHostsFile=/dev/null",
                "ansible_python_interpreter": "/usr/bin/python3"}

    inv = {"quantshift": {"vars": gv, "children": {
        "quantshift_primary": {"hosts": {names[0]: hv(names[0])}},
        "quantshift_standby": {"hosts": {n: hv(n) for n in names[1:]}}}}}
    path.write_text(yaml.safe_dump(inv))
    return path


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


#: Machine CPU busy share during the last play() (test hosts share the cores).
LAST_BUSY: list[float] = [0.0]


def play(inv: Path, playbook: str, forks: int = 20) -> float:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_FORKS": str(forks), "PATH": f"{BIN}:{os.environ['PATH']}"}
    busy0, total0 = cpu_ticks()
    t0 = time.perf_counter()
    res = _run([str(BIN / "ansible-playbook"), "-i", str(inv), str(REPO / "playbooks" / playbook)],
               env=env, cwd=REPO)
    elapsed = time.perf_counter() - t0
    busy1, total1 = cpu_ticks()
    LAST_BUSY[0] = (busy1 - busy0) / max(1, total1 - total0)
    if res.returncode != 0:
        print(res.stdout[-3000:], res.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"{playbook} failed")
    return elapsed


def bare_shell(hosts: dict[str, dict]) -> float:
    """The old runbook, as literally as the test bed allows (no gate, no checks)."""
    names = list(hosts)
    p, s = hosts[names[0]], hosts[names[1]]

    def ssh(h: dict, cmd: str) -> list[str]:
        return ["ssh", "-i", h["identity_file"], "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                f"root@{h['address']}", cmd]

    root = "/opt/quantshift"
    model = f"{root}/models/regime_classifier.pkl"
    steps = [
        ssh(p, f"cd {root} && su -s /bin/sh quantshift -c "
               f"{shlex.quote(f'{root}/venv/bin/quantshift-ml train --root {root} --promote')}"),
        ssh(p, f"cp {model} {root}/models/backups/manual-$(date +%s).pkl"),
        # hosts cannot reach each other here: scp -3 relays through the controller
        ["scp", "-3", "-i", p["identity_file"], "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
         f"root@{p['address']}:{model}", f"root@{s['address']}:{model}"],
        ["scp", "-3", "-i", p["identity_file"], "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
         f"root@{p['address']}:{model[:-4]}.json", f"root@{s['address']}:{model[:-4]}.json"],
        ssh(p, "systemctl restart quantshift-regime"),
        ssh(s, "systemctl restart quantshift-regime"),
    ]
    t0 = time.perf_counter()
    for cmd in steps:
        res = _run(cmd)
        if res.returncode != 0:
            raise SystemExit(f"bare-shell step failed: {cmd}: {res.stderr}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=16, help="hosts for the fan-out run (3..16)")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs of each measurement")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_deploy needs root (systemd-nspawn test hosts)", file=sys.stderr)
        return 1
    if not (REPO / ".cache/wheelhouse/.deps").exists():
        print("run `make wheelhouse` first", file=sys.stderr)
        return 1
    names = [f"bench{i}" for i in range(1, args.hosts + 1)]
    booted: list[str] = []
    print(f"{'measurement':44}{'wall s':>9}{'CPU':>7}", flush=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            two = boot(names[:2], 0, booted)
            inv2 = inventory(two, Path(tmp) / "two.yml")
            play(inv2, "site.yml")
            play(inv2, "retrain.yml")  # warm: first model + caches
            t_two = min(play(inv2, "retrain.yml") for _ in range(args.repeat))
            report("retrain.yml, 2 hosts", t_two, LAST_BUSY[0])
            t_bare = min(bare_shell(two) for _ in range(args.repeat))
            report("bare-shell runbook, 2 hosts", t_bare)
            rest = boot(names[2:], 2, booted)
            invn = inventory({**two, **rest}, Path(tmp) / "many.yml")
            play(invn, "site.yml")
            play(invn, "retrain.yml")
            t_many = min(play(invn, "retrain.yml") for _ in range(args.repeat))
            report(f"retrain.yml, {args.hosts} hosts", t_many, LAST_BUSY[0])
    finally:
        for n in booted:
            _run([sys.executable, str(TESTBED), "down", n])
    r1, r2 = t_two / t_bare, t_many / t_two
    v1, v2 = ("PASS" if r1 <= 3 else "MISS"), ("PASS" if r2 <= 2 else "MISS")
    print(f"retrain.yml / bare shell (2 hosts): {r1:.2f}x (goal <= 3x: {v1})")
    print(f"{args.hosts} hosts / 2 hosts: {r2:.2f}x (goal <= 2x: {v2})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
