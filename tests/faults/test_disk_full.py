"""Disk full while writing: the store root is a tmpfs with just too little room.

The tmpfs holds a copy of a real store (active model + a backup) and
``size=`` leaves room for less than the next write of a model-sized file, at
three points of ``train --promote``: staging the candidate, backing up the
active model, replacing the active model. Each must fail with a clear "No space"
error, leave the active model and its metadata byte-identical, and leave no temp
file or partial file under a real name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import artifact_sha, assert_consistent, models, qs, sha

FOREST = ("--families", "forest")
"""The budgets below are sized on a forest release, whose pickle and ONNX are the
largest files a training writes (a filter release's pickle is about 2 kB, which
the slack for logs and metadata would swallow)."""


@pytest.fixture(scope="module")
def forest_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of two forest releases (active + backup), made by the real CLI."""
    root = tmp_path_factory.mktemp("forest-store") / "root"
    for _ in range(2):
        run = qs("train", "--root", str(root), "--promote", *FOREST)
        assert run.returncode == 0, run.stderr
    return root


@pytest.fixture
def store(forest_template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(forest_template, root)
    return root

PAGE = 4096
PHASES = {
    # name: free bytes as a function of the model size S and its compiled (ONNX) size O;
    # a model is written as pkl, then onnx, then json (tens of KB)
    "staging the candidate": lambda s, o: s // 3,
    "backing up the active model": lambda s, o: s + o + 120 * 1024,
    "replacing the active model": lambda s, o: 2 * (s + o) + 200 * 1024,
}


def _pages(root: Path) -> int:
    return sum(-(-p.stat().st_size // PAGE) * PAGE for p in root.rglob("*") if p.is_file())


def _mount(target: Path, size: int) -> None:
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size // 1024}k,mode=0755",
                          "tmpfs", str(target)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()}); needs CAP_SYS_ADMIN")


def _umount(target: Path) -> None:
    if os.path.ismount(target):
        subprocess.run(["umount", str(target)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs of a chosen size needs root")
@pytest.mark.parametrize("phase", list(PHASES))
def test_disk_full_fails_clearly_and_leaves_the_active_model(store, tmp_path, phase):
    model_size = (store / "models/regime_classifier.pkl").stat().st_size
    onnx = store / "models/regime_classifier.onnx"
    onnx_size = onnx.stat().st_size if onnx.exists() else 0
    root = tmp_path / "tiny"
    root.mkdir()
    _mount(root, _pages(store) + PHASES[phase](model_size, onnx_size))
    try:
        shutil.copytree(store, root, dirs_exist_ok=True)
        before = models(root)
        active = assert_consistent(root)

        run = qs("train", "--root", str(root), "--promote", *FOREST)
        assert run.returncode != 0
        assert "No space left on device" in run.stderr, run.stderr

        after = models(root)
        # the active model, its metadata and every backup are byte-identical
        assert {k: after.get(k) for k in before} == before
        assert assert_consistent(root)["version"] == active["version"]
        # no temp file anywhere, and every model file under a real name is complete
        assert [p for p in root.rglob("*.tmp")] == []
        for pkl in (root / "models").rglob("regime_classifier_*.pkl"):
            artifact_sha(pkl)
        added = sorted(set(after) - set(before))
        allowed = {f"backups/regime_classifier_{active['version']}.pkl",
                   f"backups/regime_classifier_{active['version']}.json",
                   ".promote-journal.json"}
        if onnx_size:
            allowed.add(f"backups/regime_classifier_{active['version']}.onnx")
        assert all(a.startswith("staging/") or a in allowed for a in added), added
        for a in added:
            if a.startswith("backups/"):  # a full copy of the active model, not a fragment
                name = "regime_classifier" + Path(a).suffix
                assert after[a] == before[name]

        staged = sorted((root / "models/staging").glob("*.pkl"))
        unstaged = [a for a in added if not a.startswith("staging/")]
        if phase == "staging the candidate":
            assert staged == [] and added == []
            return
        assert len(staged) == 1  # the full disk was hit where this case says:
        if phase == "backing up the active model":
            assert unstaged == []
        else:  # the backup was written, the swap was not, and its journal was resolved
            assert unstaged == sorted(allowed - {".promote-journal.json"})
        # space freed: the staged candidate (complete) is promoted; a journal left
        # by the failed swap is resolved first
        candidate = artifact_sha(staged[0])
        subprocess.run(["mount", "-o", "remount,size=64m", str(root)], check=True)
        nxt = qs("promote", "--root", str(root), str(staged[0]))
        assert nxt.returncode == 0, nxt.stderr
        now = assert_consistent(root)
        assert now["sha256"] == candidate
        backup = root / f"models/backups/regime_classifier_{active['version']}.pkl"
        assert sha(backup) == before["regime_classifier.pkl"]
        assert not (root / "models/.promote-journal.json").exists()
    finally:
        _umount(root)
