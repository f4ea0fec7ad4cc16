"""Two retrains at once: the store's flock (one host) and the fleet lease (playbooks)."""

from __future__ import annotations

import os
import re
import signal

from .conftest import (
    HOSTS,
    Fleet,
    assert_consistent,
    lock_holder,
    qs_popen,
    sha,
    tree,
    wait_for,
)


def test_two_cli_trainings_at_once_one_wins_one_is_refused(store):
    before_tree = tree(store)
    before = assert_consistent(store)
    procs = [qs_popen("train", "--root", str(store), "--promote") for _ in range(2)]
    holder = None
    try:
        pids = {p.pid: p for p in procs}
        wait_for(lambda: lock_holder(store) in pids, "one trainer to take the lock")
        holder = pids[lock_holder(store)]
        # freeze the winner inside its critical section: the other one is certain to
        # arrive while the lock is held, whatever the machine's load
        os.kill(holder.pid, signal.SIGSTOP)
        (other,) = [p for p in procs if p is not holder]
        _, other_err = other.communicate(timeout=120)
    finally:
        if holder is not None:
            os.kill(holder.pid, signal.SIGCONT)
    _, holder_err = holder.communicate(timeout=120)

    assert other.returncode == 4, other_err
    assert "another quantshift operation holds" in other_err
    assert f'"pid": {holder.pid}' in other_err  # it names the holder
    assert holder.returncode == 0, holder_err

    now = assert_consistent(store)
    assert now["version"] != before["version"]
    backup = store / f"models/backups/regime_classifier_{before['version']}.pkl"
    assert sha(backup) == before_tree["models/regime_classifier.pkl"]
    # the refused one wrote nothing: one new training log, one new backup
    new_logs = {k for k in tree(store) if k.startswith("logs/")} - set(before_tree)
    assert new_logs == {f"logs/model-training-{now['version']}.log"}


def test_two_retrain_playbooks_at_once_one_completes_one_is_refused(fleet: Fleet) -> None:
    before = fleet.assert_one_version()
    runs = [fleet.popen("retrain.yml") for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in runs]
    rcs = [p.returncode for p in runs]

    assert sorted(rc == 0 for rc in rcs) == [False, True], "\n".join(outs)
    winner, loser = (outs[0], outs[1]) if rcs[0] == 0 else (outs[1], outs[0])
    assert "another operation holds the lease" in loser, loser
    assert "TASK [Train a candidate]" not in loser  # refused before training anything

    now = fleet.assert_one_version()  # both hosts on the winner's candidate
    version = re.search(r"candidate (\d{8}-\d{6})", winner)
    assert version and now["version"] == version[1] != before["version"]
    for h in HOSTS:
        assert not (fleet.root(h) / "models/.operation.lease").exists()
