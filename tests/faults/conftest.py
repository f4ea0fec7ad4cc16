"""Fault-injection harness: real stores, real CLI processes, real playbook runs.

Every fault test compares sha256 digests of files taken before and after the
fault: "nothing lost" means the active model, its metadata and the backups are
byte-identical, or every host is on the new version.

The digests leave out ``models/.quantshift.lock``: it is the flock file whose
only content is the last holder's pid (for the refused process's message), not
model data, and a process killed while holding it leaves its pid there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
QS = str(BIN / "quantshift-ml")
HOSTS = ("primary", "standby")
LOCK_NAME = ".quantshift.lock"

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
       "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
ENV.pop("QUANTSHIFT_ROOT", None)


@pytest.fixture(scope="session", autouse=True)
def fleet_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's fleet key pair; every CLI process trusts and signs with it."""
    keys = tmp_path_factory.mktemp("fleet-keys")
    subprocess.run([QS, "keys", "generate", "--keys", str(keys)], check=True,
                   capture_output=True)
    ENV["QUANTSHIFT_KEYS"] = os.environ["QUANTSHIFT_KEYS"] = str(keys)  # CLI and in-process
    return keys


def install_keys(base: Path, keys: Path) -> None:
    """What site.yml installs on inventory/local under ``base``: the controller's key
    pair (fleet-keys/), trusted keys on every host, the signing key on the primary."""
    shutil.copytree(keys, base / "fleet-keys")
    for host in HOSTS:
        shutil.copytree(keys / "trusted", base / "hosts" / f"{host}.keys" / "trusted")
    shutil.copy(keys / "signing.key", base / "hosts" / "primary.keys" / "signing.key")


# ---- digests ----------------------------------------------------------------------
def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path, *, staging: bool = True) -> dict[str, str]:
    """sha256 of every file under ``root`` but the flock file (and staging/ if asked)."""
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or p.name == LOCK_NAME:
            continue
        if not staging and "staging" in rel.parts:
            continue
        out[str(rel)] = sha(p)
    return out


def models(root: Path, *, staging: bool = True) -> dict[str, str]:
    """Digest of ``root/models``: active model, metadata, backups (and staging)."""
    return tree(root / "models", staging=staging)


def meta(root: Path) -> dict:
    return json.loads((root / "models/regime_classifier.json").read_text())


def assert_consistent(root: Path) -> dict:
    """The active pkl's sha256 is the one its metadata records; returns the metadata."""
    m = meta(root)
    assert sha(root / "models/regime_classifier.pkl") == m["sha256"], root
    return m


def artifact_sha(pkl: Path) -> str:
    """sha256 of a complete artifact: asserts it is the one its metadata records."""
    recorded = json.loads(pkl.with_suffix(".json").read_text())["sha256"]
    assert sha(pkl) == recorded, f"{pkl} does not match its metadata"
    return recorded


def leftovers(root: Path) -> list[str]:
    """Temp files of the atomic writers (``.NAME.*.tmp``) or a promotion journal."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and (p.name.endswith(".tmp") or "journal" in p.name))


# ---- the CLI ------------------------------------------------------------------------
def qs(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QS, *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout, check=False)


def qs_popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([QS, *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 120,
             alive: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if alive is not None and alive.poll() is not None:
            out, err = alive.communicate()
            pytest.fail(f"process ended (rc {alive.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def lock_holder(root: Path) -> int | None:
    """pid written into the store's flock file by its current holder, if any."""
    try:
        return int(json.loads((root / "models" / LOCK_NAME).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


# ---- one store ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store made by the real CLI: an active model and one backup."""
    root = tmp_path_factory.mktemp("store-template") / "root"
    for _ in range(2):
        run = qs("train", "--root", str(root), "--promote")
        assert run.returncode == 0, run.stderr
    assert len(list((root / "models/backups").glob("*.pkl"))) == 1
    return root


@pytest.fixture
def store(store_template: Path, tmp_path: Path) -> Path:
    """A private copy of the template store."""
    root = tmp_path / "root"
    shutil.copytree(store_template, root)
    return root


# ---- the local fleet (two hosts on inventory/local) ----------------------------------
@dataclass
class Run:
    rc: int
    out: str


class Fleet:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.artifacts = base / "artifacts"

    def cmd(self, playbook: str, *extra: str) -> list[str]:
        return [str(BIN / "ansible-playbook"), f"playbooks/{playbook}",
                "-e", f"quantshift_local_base={self.base / 'hosts'}",
                "-e", f"quantshift_controller_artifacts={self.artifacts}", *extra]

    def play(self, playbook: str, *extra: str) -> Run:
        proc = subprocess.run(self.cmd(playbook, *extra), cwd=REPO, env=ENV,
                              capture_output=True, text=True, timeout=600, check=False)
        return Run(proc.returncode, proc.stdout + proc.stderr)

    def popen(self, playbook: str, *extra: str) -> subprocess.Popen[str]:
        """A playbook run in its own process group (so it can be killed as a whole)."""
        return subprocess.Popen(self.cmd(playbook, *extra), cwd=REPO, env=ENV, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def root(self, host: str) -> Path:
        return self.base / "hosts" / host

    def digest(self) -> dict[str, str]:
        """Every host's models/ (active, metadata, backups, staging)."""
        return {f"{h}/{k}": v for h in HOSTS for k, v in models(self.root(h)).items()}

    def assert_one_version(self) -> dict:
        """Every host runs one version whose pkl matches both metadata files."""
        metas = [assert_consistent(self.root(h)) for h in HOSTS]
        assert len({(m["version"], m["sha256"]) for m in metas}) == 1, metas
        return metas[0]


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def fleet_template(store_template: Path, tmp_path_factory: pytest.TempPathFactory,
                   fleet_keys: Path) -> Path:
    """Both hosts of inventory/local with the same models (active + one backup).

    The models are the CLI-made template store's, copied to each host: the same
    state two retrain.yml runs would leave, without their minute. (site.yml on
    this inventory only makes directories; tests/integration runs it.)
    """
    base = tmp_path_factory.mktemp("fleet-template")
    fleet = Fleet(base)
    for h in HOSTS:
        shutil.copytree(store_template / "models", fleet.root(h) / "models")
    install_keys(base, fleet_keys)
    fleet.assert_one_version()
    return base


@pytest.fixture
def fleet(fleet_template: Path, tmp_path: Path) -> Iterator[Fleet]:
    base = tmp_path / "fleet"
    shutil.copytree(fleet_template, base)
    yield Fleet(base)
