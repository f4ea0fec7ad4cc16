"""Release archives: the one file a rollout ships per host, never trusted."""

from __future__ import annotations

import errno
import io
import json
import tarfile
from pathlib import Path

import pytest

from quantshift_ml.cli.dispatch import main
from quantshift_ml.data import BundledSource
from quantshift_ml.errors import IntegrityError
from quantshift_ml.ops import operations
from quantshift_ml.store import ModelStore, release
from quantshift_ml.store.release import release_metadata, unpack_release
from quantshift_ml.store.signing import Keyring

from .conftest import FAST, OPEN, tree_digest


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real trained candidate (pkl, json, onnx) staged in a scratch store."""
    root = tmp_path_factory.mktemp("trainer")
    out = operations.train(BundledSource(), root=root, config=FAST, gate=OPEN)
    assert len(out["files"]) == 3
    return out


def _pack(candidate: dict, dest: Path) -> Path:
    """Pack as every playbook does (tasks/release.yml): the package's pack_release."""
    return Path(release.pack_release(Path(candidate["artifact"]), dest)["archive"])


def _copy(candidate: dict, dest: Path) -> Path:
    """The candidate's files in ``dest`` (a controller's release directory); its pkl."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in map(Path, candidate["files"]):
        (dest / f.name).write_bytes(f.read_bytes())
    return dest / Path(candidate["artifact"]).name


def test_pack_release_is_the_release_object(candidate: dict, tmp_path: Path) -> None:
    pkl = _copy(candidate, tmp_path / "controller")
    keys = Keyring.default()
    dry = release.pack_release(pkl, pkl.parent, keys=keys, dry_run=True)
    assert not (pkl.parent / f"release-{candidate['version']}.tar").exists()
    out = release.pack_release(pkl, pkl.parent, keys=keys)
    assert {k: out[k] for k in ("version", "sha256")} == {
        "version": candidate["version"], "sha256": candidate["sha256"]}
    assert out["archive"] == dry["archive"] and out["changed"] and out["signature_checked"]
    with tarfile.open(out["archive"]) as tf:
        assert sorted(tf.getnames()) == sorted(Path(f).name for f in candidate["files"])
    assert not release.pack_release(pkl, pkl.parent, keys=keys)["changed"]  # same bytes
    assert release.release_files(pkl) == [pkl.with_suffix(f".{s}")
                                          for s in release.RELEASE_SUFFIXES]


def test_pack_release_refuses_a_tampered_or_forged_release(candidate: dict,
                                                           tmp_path: Path) -> None:
    pkl = _copy(candidate, tmp_path / "controller")
    data = bytearray(pkl.read_bytes())
    data[100] ^= 0x01
    pkl.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match its metadata"):
        release.pack_release(pkl, pkl.parent)
    assert not list(pkl.parent.glob("release-*.tar"))
    pkl = _copy(candidate, tmp_path / "forged")
    meta = json.loads(pkl.with_suffix(".json").read_text())
    meta["metrics"] = {"test_accuracy": 1.0}
    pkl.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match="forged or altered"):
        release.pack_release(pkl, pkl.parent, keys=Keyring.default())


def _archive(dest: Path, members: dict[str, bytes], *, symlink: str | None = None) -> Path:
    archive = dest / "release-crafted.tar"
    with tarfile.open(archive, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(info)
    return archive


def test_tar_archive_unpacks_and_promotes_byte_identical(candidate: dict, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "host")
    store.layout.staging.mkdir(parents=True)
    archive = _pack(candidate, store.layout.staging)
    assert release_metadata(archive)["sha256"] == candidate["sha256"]

    pkl = unpack_release(archive, store.layout.staging)
    assert not archive.exists()  # a container only: gone once unpacked
    for f in map(Path, candidate["files"]):
        assert (store.layout.staging / f.name).read_bytes() == f.read_bytes()
    res = store.promote(pkl)
    assert res["changed"] and res["current"]["sha256"] == candidate["sha256"]


@pytest.mark.parametrize("case", ["traversal", "symlink", "stranger", "two versions",
                                  "no metadata", "duplicate"])
def test_archives_that_are_not_exactly_a_release_are_refused(
        candidate: dict, tmp_path: Path, case: str) -> None:
    files = {Path(f).name: Path(f).read_bytes() for f in candidate["files"]}
    pkl_name = next(n for n in files if n.endswith(".pkl"))
    members: dict[str, bytes] = dict(files)
    symlink = None
    if case == "traversal":
        members[f"../{pkl_name}"] = b"evil"
    elif case == "symlink":
        symlink = pkl_name.replace(".pkl", ".onnx")
        members.pop(symlink)
    elif case == "stranger":
        members["authorized_keys"] = b"ssh-ed25519 AAAA"
    elif case == "two versions":
        members["regime_classifier_19990101-000000.onnx"] = b"x"
        members.pop(pkl_name.replace(".pkl", ".onnx"))
    elif case == "no metadata":
        members.pop(pkl_name.replace(".pkl", ".json"))
    staging = tmp_path / "staging"
    staging.mkdir()
    archive = _archive(tmp_path, members, symlink=symlink)
    if case == "duplicate":
        with tarfile.open(archive, "a") as tf:
            info = tarfile.TarInfo(pkl_name)
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(IntegrityError) as exc:
        unpack_release(archive, staging)
    assert str(archive) in str(exc.value)
    assert list(staging.iterdir()) == []  # nothing written
    assert archive.exists()  # kept for inspection
    assert not (tmp_path / pkl_name).exists()


def test_truncated_or_foreign_file_is_refused(candidate: dict, tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    archive = _pack(candidate, tmp_path)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(IntegrityError, match=r"truncated|not a readable release archive"):
        unpack_release(archive, staging)
    assert list(staging.iterdir()) == []
    archive.write_bytes(b"PK\x03\x04 not a tar at all")
    with pytest.raises(IntegrityError, match="not a readable release archive"):
        release_metadata(archive)


def test_disk_full_midway_leaves_no_partial_release(
        candidate: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    archive = _pack(candidate, tmp_path)
    real = release.atomic_write_bytes
    calls = []

    def second_write_fails(path: Path, data: bytes, mode: int = 0o640) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data, mode)

    monkeypatch.setattr(release, "atomic_write_bytes", second_write_fails)
    with pytest.raises(OSError, match="No space left"):
        unpack_release(archive, staging)
    assert list(staging.iterdir()) == [] and archive.exists()


def test_tampered_member_is_caught_at_promotion(candidate: dict, tmp_path: Path) -> None:
    """The archive is a container: a swapped pickle inside fails the sha256 check."""
    files = {Path(f).name: Path(f).read_bytes() for f in candidate["files"]}
    pkl_name = next(n for n in files if n.endswith(".pkl"))
    files[pkl_name] = files[pkl_name][:-1] + b"\x00"
    store = ModelStore(tmp_path / "host")
    store.layout.staging.mkdir(parents=True)
    pkl = unpack_release(_archive(tmp_path, files), store.layout.staging)
    before = tree_digest(store.layout.models)
    with pytest.raises(IntegrityError, match="does not match metadata"):
        store.promote(pkl)
    def kept(digest: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in digest.items()
                if not k.startswith("staging/") and k != ".quantshift.lock"}

    assert kept(tree_digest(store.layout.models)) == kept(before)


def test_cli_promotes_a_release_archive(candidate: dict, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    archive = _pack(candidate, tmp_path)
    code = main(["promote", "--root", str(tmp_path / "host"), str(archive), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["current"]["sha256"] == candidate["sha256"]
    assert ModelStore(tmp_path / "host").active().sha256 == candidate["sha256"]  # type: ignore[union-attr]
