"""A release, the one object every path that ships a model hands to the rollout.

``pack_release`` turns a version's files (a retrain's fetched candidate, a
backup, an artifact kept on the controller) into ``{version, sha256, archive}``
after checking them; ``unpack_release`` is its inverse on each host. Which files
make a release is named once, in ``RELEASE_SUFFIXES``.

Why one archive: one file to ship per host and rollout instead of three.

Why: Ansible's ``copy`` costs several SSH round trips and two Python starts on
the host for every file (stat, temporary directory, transfer, permissions,
copy, clean-up). A release is a pickle, its metadata and its compiled model;
packed into one uncompressed tar on the controller, a rollout pays that cost
once per host, which matters when a batch of standbys is staged at once.

The archive is only a container, never trusted: its members must be exactly a
release's files (regular files, one version, no paths), they are written to
staging atomically, and promotion then checks them against the metadata's
sha256s like any staged candidate. The archive is deleted once unpacked.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quantshift_ml.errors import IntegrityError, UsageError
from quantshift_ml.store import checks
from quantshift_ml.store.files import atomic_write_bytes
from quantshift_ml.store.layout import MODEL_NAME, VERSION_RE
from quantshift_ml.store.signing import Keyring

RELEASE_SUFFIXES = ("pkl", "json", "onnx")
"""The files of a release, by suffix: a model, its signed metadata, its compiled form.
Adding a file to every release is adding its suffix here (and naming its sha256 in
the metadata, which ``checks.check_files`` verifies)."""
REQUIRED_SUFFIXES = ("pkl", "json")
MEMBER_RE = re.compile(rf"^{MODEL_NAME}_(\d{{8}}-\d{{6}})\.({'|'.join(RELEASE_SUFFIXES)})$")


def _members(tf: tarfile.TarFile, archive: Path) -> tuple[str, dict[str, tarfile.TarInfo]]:
    """The release's members by suffix; refuse anything else an archive could carry."""
    found: dict[str, tarfile.TarInfo] = {}
    version = ""
    for m in tf.getmembers():
        match = MEMBER_RE.match(m.name)
        if not m.isfile() or match is None:
            raise IntegrityError(
                f"{archive}: unexpected member {m.name!r}; a release archive holds only "
                f"{MODEL_NAME}_VERSION with the suffixes {', '.join(RELEASE_SUFFIXES)} "
                "as plain files")
        if version and match[1] != version:
            raise IntegrityError(f"{archive}: members of two versions ({version}, {match[1]})")
        if match[2] in found:
            raise IntegrityError(f"{archive}: {m.name} appears twice")
        version = match[1]
        found[match[2]] = m
    missing = sorted(set(REQUIRED_SUFFIXES) - set(found))
    if missing:
        raise IntegrityError(
            f"{archive}: no {' or '.join('.' + s for s in missing)} member; not a release archive")
    return version, found


def _read(tf: tarfile.TarFile, member: tarfile.TarInfo, archive: Path) -> bytes:
    fh = tf.extractfile(member)
    data = fh.read() if fh is not None else b""
    if len(data) != member.size:
        raise IntegrityError(f"{archive}: {member.name} is truncated")
    return data


@contextlib.contextmanager
def _opened(archive: Path) -> Iterator[tarfile.TarFile]:
    """The archive open for reading; any tar error, at open or later, as IntegrityError."""
    try:
        with tarfile.open(archive, "r:") as tf:
            yield tf
    except tarfile.TarError as exc:
        raise IntegrityError(f"{archive}: not a readable release archive ({exc})") from exc


def release_metadata(archive: Path) -> dict[str, Any]:
    """The metadata inside an archive, read without writing anything (check mode)."""
    with _opened(archive) as tf:
        _, members = _members(tf, archive)
        try:
            meta = json.loads(_read(tf, members["json"], archive))
        except ValueError as exc:
            raise IntegrityError(f"{archive}: metadata is not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise IntegrityError(f"{archive}: metadata is not a JSON object")
    return meta


def unpack_release(archive: Path, staging: Path) -> Path:
    """Write the archive's files to ``staging``; return the staged pickle.

    All or nothing: on any failure (bad member, truncation, disk full) the files
    this call wrote are removed again and the archive is kept for inspection.
    """
    written: list[Path] = []
    try:
        with _opened(archive) as tf:
            version, members = _members(tf, archive)
            for member in members.values():
                dest = staging / member.name
                atomic_write_bytes(dest, _read(tf, member, archive))
                written.append(dest)
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    archive.unlink()
    return staging / f"{MODEL_NAME}_{version}.pkl"


def archive_name(version: str) -> str:
    return f"release-{version}.tar"


def release_pkl(directory: Path, version: str) -> Path:
    """The model file of ``version`` in a directory of release files."""
    if not VERSION_RE.match(version):
        raise UsageError(f"release version {version!r} is not YYYYMMDD-HHMMSS")
    return directory / f"{MODEL_NAME}_{version}.pkl"


def release_files(pkl: Path) -> list[Path]:
    """The files of the release whose model is ``pkl`` that exist, pkl first."""
    return [p for p in (pkl.with_suffix(f".{s}") for s in RELEASE_SUFFIXES) if p.exists()]


def _checked(pkl: Path, keys: Keyring | None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Metadata and contents of a release, checked on the bytes that will be packed.

    The sha256s always; the signature when ``keys`` holds trusted keys (a controller
    without the fleet's public keys checks the files only).
    """
    art = checks.load_artifact(pkl)
    where = f"release {art.version or pkl.stem} ({pkl.parent})"
    if keys is not None and keys.trusted():
        keys.check(art.meta, pkl.with_suffix(".json"))
    contents = {p.suffix[1:]: p.read_bytes() for p in release_files(pkl)}
    try:
        checks.check_version(art)
        checks.check_files(art, content=contents["pkl"], onnx_content=contents.get("onnx"))
    except IntegrityError as exc:
        raise IntegrityError(f"{where} does not match its metadata, not shipping it: "
                             f"{exc}") from exc
    return art.meta, contents


def pack_release(pkl: Path, dest: Path, *, keys: Keyring | None = None,
                 dry_run: bool = False) -> dict[str, Any]:
    """Check a version's files and pack them into ``dest/release-VERSION.tar``.

    Returns ``{version, sha256, archive, files, signature_checked}``: what the
    rollout ships and what each host must end up running. Written atomically, so
    a killed run never leaves a half archive for the next one; ``dry_run`` checks
    and names the archive without writing it (check mode).
    """
    meta, contents = _checked(pkl, keys)
    version = str(meta["version"])
    archive = dest / archive_name(version)
    out = {"version": version, "sha256": str(meta["sha256"]), "archive": str(archive),
           "files": [f"{MODEL_NAME}_{version}.{s}" for s in RELEASE_SUFFIXES if s in contents],
           "signature_checked": bool(keys is not None and keys.trusted())}
    if dry_run:
        return {**out, "changed": False}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for suffix in RELEASE_SUFFIXES:
            if suffix in contents:
                info = tarfile.TarInfo(f"{MODEL_NAME}_{version}.{suffix}")
                info.size, info.mode = len(contents[suffix]), 0o640
                tf.addfile(info, io.BytesIO(contents[suffix]))
    data = buf.getvalue()
    changed = not archive.exists() or archive.read_bytes() != data
    if changed:
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(archive, data)
    return {**out, "changed": changed}
