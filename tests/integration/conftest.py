"""Run the real playbooks against inventory/local with a throw-away store base."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Run:
    rc: int
    out: str

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host."""
        out: dict[str, dict[str, int]] = {}
        for host, rest in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", self.out, re.M):
            out[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", rest)}
        return out


class Fleet:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.artifacts = base / "artifacts"

    def play(self, playbook: str, *extra: str) -> Run:
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
               "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "PYTHONWARNINGS": "ignore"}
        cmd = [str(BIN / "ansible-playbook"), f"playbooks/{playbook}",
               "-e", f"quantshift_local_base={self.base / 'hosts'}",
               "-e", f"quantshift_controller_artifacts={self.artifacts}", *extra]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
        return Run(proc.returncode, proc.stdout + proc.stderr)

    def root(self, host: str) -> Path:
        return self.base / "hosts" / host

    def meta(self, host: str) -> dict:
        return json.loads((self.root(host) / "models/regime_classifier.json").read_text())

    def active_sha(self, host: str) -> str:
        return hashlib.sha256(
            (self.root(host) / "models/regime_classifier.pkl").read_bytes()).hexdigest()

    def digest(self) -> dict[str, str]:
        hosts = self.base / "hosts"
        return {str(p.relative_to(hosts)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(hosts.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return Fleet(tmp_path_factory.mktemp("fleet"))
