"""Training crashes mid-way: the process is killed with SIGKILL, for real.

The trainer holds the store's flock while it trains; the kernel releases a flock
when its holder dies, so the next run is never blocked by a crashed one. A kill
later in ``train --promote`` (after staging, or inside the promotion between the
renames) is recovered by the next operation from the promotion journal.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from .conftest import (
    ENV,
    artifact_sha,
    assert_consistent,
    leftovers,
    lock_holder,
    models,
    qs,
    qs_popen,
    sha,
    tree,
    wait_for,
)


def test_kill_9_while_training_changes_nothing_and_the_next_run_works(store):
    before_tree = tree(store)
    before = assert_consistent(store)
    proc = qs_popen("train", "--root", str(store), "--promote")
    try:
        wait_for(lambda: lock_holder(store) == proc.pid, "the trainer to take the store lock",
                 alive=proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # it died holding the lock (its pid is still written in the lock file) ...
    assert lock_holder(store) == proc.pid
    # ... before staging, logging or promoting anything: every file is as it was
    assert tree(store) == before_tree
    assert leftovers(store) == []

    # the kernel released the flock: the next run is not refused and promotes
    nxt = qs("train", "--root", str(store), "--promote")
    assert nxt.returncode == 0, nxt.stderr
    assert "another quantshift operation" not in nxt.stderr
    now = assert_consistent(store)
    assert now["version"] != before["version"]
    backup = store / f"models/backups/regime_classifier_{before['version']}"
    assert sha(backup.with_suffix(".pkl")) == before_tree["models/regime_classifier.pkl"]
    assert sha(backup.with_suffix(".json")) == before_tree["models/regime_classifier.json"]
    assert lock_holder(store) is None  # released (emptied) by the clean exit


# A real SIGKILL that the process sends itself at an exact point of
# `quantshift-ml train --promote`: right after the rename that completed a step
# (every store write is a temp file + os.replace, so these are its boundaries).
_KILL_AFTER = r"""
import os, re, signal, sys
from quantshift_ml.cli import dispatch as cli

pattern = re.compile(sys.argv[1])
real_replace = os.replace

def replace(src, dst, *a, **k):
    real_replace(src, dst, *a, **k)
    if pattern.search(os.fspath(dst)):
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
sys.exit(cli.main(sys.argv[2:]))
"""
_POINTS = {  # point: the rename after which the trainer dies
    "staged": r"/models/staging/regime_classifier_[\d-]+\.json$",
    "journaled": r"/models/\.promote-journal\.json$",
    "swapped": r"/models/regime_classifier\.pkl$",
}


@pytest.mark.parametrize("point", list(_POINTS))
def test_kill_9_during_promotion_is_recovered_by_the_next_operation(store, point):
    before = models(store, staging=False)
    old = assert_consistent(store)
    backup = store / f"models/backups/regime_classifier_{old['version']}.pkl"
    assert not backup.exists()
    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER, _POINTS[point],
                           "train", "--root", str(store), "--promote"],
                          env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (staged,) = sorted((store / "models/staging").glob("*.pkl"))
    candidate = artifact_sha(staged)  # complete: its sha256 is the one recorded

    after = models(store, staging=False)
    expected = dict(before)
    if point != "staged":  # the previous model was backed up byte for byte, then journaled
        expected[f"backups/{backup.name}"] = before["regime_classifier.pkl"]
        expected[f"backups/{backup.with_suffix('.json').name}"] = before["regime_classifier.json"]
        if "regime_classifier.onnx" in before:  # the compiled model is backed up with it
            expected[f"backups/{backup.with_suffix('.onnx').name}"] = before[
                "regime_classifier.onnx"]
        expected[".promote-journal.json"] = after.get(".promote-journal.json", "missing")
    if point == "swapped":  # the new model file is in place, its metadata not yet
        expected["regime_classifier.pkl"] = candidate
    assert after == expected
    assert leftovers(store) == ([] if point == "staged" else ["models/.promote-journal.json"])

    # the next operation (promoting the staged candidate) first finishes or undoes the
    # interrupted promotion, then promotes: all on the new version, the old one kept
    nxt = qs("promote", "--root", str(store), str(staged))
    assert nxt.returncode == 0, nxt.stderr
    if point != "staged":
        assert "recovered an interrupted promotion" in nxt.stderr
    now = assert_consistent(store)
    assert now["sha256"] == candidate and now["version"] != old["version"]
    final = models(store)
    assert final[f"backups/{backup.name}"] == before["regime_classifier.pkl"]
    assert final[f"backups/{backup.with_suffix('.json').name}"] == before["regime_classifier.json"]
    assert {k: final[k] for k in before if k.startswith("backups/")} == {
        k: v for k, v in before.items() if k.startswith("backups/")}
    assert leftovers(store) == []
