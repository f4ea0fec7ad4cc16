"""Fleet operations on the booted hosts: second retrain, rollback, refused gate.

Marked ``fleet_operations``: conftest.py runs these after every read-only test
(test_hosts.py, test_provisioned.py), whatever the file names, in this file's
order; they drive the real playbooks with Molecule's inventory, asserting the
files on both hosts after each step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest
import testinfra

# a floor the candidate cannot reach: on a 2011 holdout (August's turbulence) no
# model scores 0.99, while the bundled data's last holdout is too easy (1.000)
REFUSE = ("-e", "quantshift_min_accuracy=0.99", "-e", "quantshift_as_of=2011-10-31")

INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"])
PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
ROOT = "/opt/quantshift"
HOSTS = ("primary", "standby")

pytestmark = pytest.mark.fleet_operations


def _host(name: str):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def _command(playbook: str, *extra: str, env_extra: dict[str, str] | None = None
             ) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, **(env_extra or {})}
    cfg = EPHEMERAL / "ansible.cfg"
    if cfg.exists():
        env["ANSIBLE_CONFIG"] = str(cfg)
    env.update({"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    ansible = Path(sys.executable).parent / "ansible-playbook"
    argv = [str(ansible), "-i", str(INVENTORY.parent), str(PROJECT / "playbooks" / playbook),
            *extra]
    return argv, env


def _play(playbook: str, *extra: str, env_extra: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    argv, env = _command(playbook, *extra, env_extra=env_extra)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)


def _popen(playbook: str, out: IO[str], *extra: str, env_extra: dict[str, str] | None = None
           ) -> subprocess.Popen[str]:
    """A playbook run in the background, its output (flushed per line) into out."""
    argv, env = _command(playbook, *extra, env_extra=env_extra)
    return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def _state() -> dict[str, dict[str, str]]:
    """Per host: sha256 of every model file under models/ (active, metadata, backups;
    not staging, not the lock and lease files)."""
    out = {}
    for name in HOSTS:
        h = _host(name)
        listing = h.check_output(
            f"cd {ROOT}/models && find . -path ./staging -prune -o -type f ! -name '.*' -print0"
            " | sort -z | xargs -0 sha256sum")
        out[name] = dict(reversed(line.split(None, 1)) for line in listing.splitlines())
    return out


def _active(name: str) -> dict:
    return json.loads(_host(name).file(f"{ROOT}/models/regime_classifier.json").content_string)


@pytest.fixture(scope="module")
def first_release() -> dict:
    return _active("primary")


def test_second_retrain_moves_both_hosts_and_keeps_a_backup(first_release: dict) -> None:
    run = _play("retrain.yml")
    assert run.returncode == 0, run.stdout[-4000:]
    new = [_active(n) for n in HOSTS]
    assert new[0]["sha256"] == new[1]["sha256"] != first_release["sha256"]
    for n in HOSTS:
        backup = f"{ROOT}/models/backups/regime_classifier_{first_release['version']}.pkl"
        assert _host(n).file(backup).sha256sum == first_release["sha256"]
        health = json.loads(_host(n).check_output("curl -sf http://127.0.0.1:8787/healthz"))
        assert health["sha256"] == new[0]["sha256"]


def test_rollback_puts_both_hosts_back(first_release: dict) -> None:
    run = _play("rollback.yml")
    assert run.returncode == 0, run.stdout[-4000:]
    for n in HOSTS:
        assert _active(n)["sha256"] == first_release["sha256"]
        assert _host(n).file(f"{ROOT}/models/regime_classifier.pkl").sha256sum == \
            first_release["sha256"]


def test_refused_gate_leaves_every_model_file_identical() -> None:
    before = _state()
    run = _play("retrain.yml", *REFUSE)
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert "Deployment refused" in out and "floor 0.99" in out
    assert _state() == before


def _release(version: str, pkl: bytes, onnx: bytes, *, sign: bool) -> None:
    """A release folder on the controller, as a retrain would have fetched it."""
    import hashlib

    from quantshift_ml.store import signing

    current = _active("primary")
    folder = EPHEMERAL / "artifacts" / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"regime_classifier_{version}.pkl").write_bytes(pkl)
    (folder / f"regime_classifier_{version}.onnx").write_bytes(onnx)
    meta = {k: v for k, v in current.items() if k not in ("signature", "filter")}
    # a forest release whatever family the fleet's champion is: its ONNX is what
    # the service must load (a filter champion's metadata names no ONNX file)
    parity = (current.get("onnx") or {}).get("parity") or {"ok": True, "rows": 1,
                                                           "max_probability_diff": 0.0}
    meta.update({"version": version, "sha256": hashlib.sha256(pkl).hexdigest(),
                 "family": "forest",
                 "onnx": {"parity": parity, "file": f"regime_classifier_{version}.onnx",
                          "sha256": hashlib.sha256(onnx).hexdigest()}})
    if sign:  # with the fleet key site.yml generated on the controller for this scenario
        meta = signing.Keyring(EPHEMERAL / "fleet-keys").sign(meta)
    else:  # the attacker's version: sha256s match, no key to sign with
        meta["signature"] = current["signature"]
    (folder / f"regime_classifier_{version}.json").write_text(json.dumps(meta))


def _deploy(version: str) -> subprocess.CompletedProcess[str]:
    return _play("deploy.yml", "-e", f"quantshift_release_version={version}",
                 "-e", "quantshift_health_timeout=20")


def test_broken_candidate_is_rolled_back_on_standby_and_never_reaches_primary() -> None:
    """A signed release the service cannot load (its files match its signed
    metadata, so only the service's health check can catch it): the standby is
    restored, the primary is never touched, and the play fails naming the host."""
    current = _active("primary")
    version = "20300101-000000"
    _release(version, b"not a pickle, never read by the service", b"not an onnx model",
             sign=True)
    before = _state()
    run = _deploy(version)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "failed on standby" in out and "restored" in out
    assert _state() == before  # both hosts: active, metadata and backups byte-identical
    for n in HOSTS:
        health = json.loads(_host(n).check_output("curl -sf http://127.0.0.1:8787/healthz"))
        assert health["sha256"] == current["sha256"]


def test_forged_release_with_matching_sha_never_runs_on_any_host() -> None:
    """A pickle whose loading would run a command, its sha256 in the metadata: the
    signature does not match, the standby refuses it before reading it, the
    primary is never reached, nothing runs and no model file changes."""
    import pickle

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, ("touch /tmp/quantshift-pwned",)

    current = _active("primary")
    version = "20300102-000000"
    compiled = _host("primary").file(f"{ROOT}/models/regime_classifier.onnx")
    onnx = compiled.content if compiled.exists else b"not an onnx model"
    _release(version, pickle.dumps(Payload()), onnx, sign=False)
    before = _state()
    run = _deploy(version)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "forged or altered" in out, out[-3000:]
    assert _state() == before
    for n in HOSTS:
        assert not _host(n).file("/tmp/quantshift-pwned").exists
        health = json.loads(_host(n).check_output("curl -sf http://127.0.0.1:8787/healthz"))
        assert health["sha256"] == current["sha256"]


def test_standby_unreachable_mid_rollout_then_rerun_converges(tmp_path: Path) -> None:
    """Cut the standby's link during the play, once the candidate is trained on the
    primary and before the rollout reaches the standby: the standby cannot be
    reached, the rollout stops before the primary; after the link is back, a
    re-run takes over the dead run's lease and converges both hosts on one version."""
    before = _state()
    # no shared ssh master (one opened by an earlier play would hang on the dead link)
    # and short timeouts; the first value of an ssh option wins, so replace ssh_args
    no_master = {"ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o ControlPath=none "
                                     "-o ConnectTimeout=5 -o ServerAliveInterval=5 "
                                     "-o ServerAliveCountMax=2"}
    log = tmp_path / "retrain.log"
    with log.open("w") as out:
        proc = _popen("retrain.yml", out, env_extra=no_master)
        try:
            # the primary has trained and gated: the standby is not touched yet
            deadline = time.monotonic() + 600
            while "TASK [Gate the candidate]" not in log.read_text():
                assert proc.poll() is None, log.read_text()[-4000:]
                assert time.monotonic() < deadline, "training did not finish"
                time.sleep(0.2)
            subprocess.run(["ip", "link", "set", "qs-h2", "down"], check=True)
            proc.wait(timeout=600)
        finally:
            subprocess.run(["ip", "link", "set", "qs-h2", "up"], check=True)
            if proc.poll() is None:
                proc.kill()
    output = log.read_text()
    assert proc.returncode != 0
    assert "UNREACHABLE" in output, output[-4000:]
    assert "changed: [primary]" in output  # the play was under way when the link went
    assert _state()["primary"] == before["primary"]  # never touched
    assert _state()["standby"] == before["standby"]
    rerun = _play("retrain.yml")
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
    metas = [_active(n) for n in HOSTS]
    assert metas[0]["sha256"] == metas[1]["sha256"] != _active_before(before)


def _active_before(state: dict[str, dict[str, str]]) -> str:
    return state["primary"]["./regime_classifier.pkl"]
