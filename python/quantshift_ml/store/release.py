"""Release archives: one file to ship per host and rollout instead of three.

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
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quantshift_ml.errors import IntegrityError
from quantshift_ml.store.files import atomic_write_bytes
from quantshift_ml.store.layout import MODEL_NAME

MEMBER_RE = re.compile(rf"^{MODEL_NAME}_(\d{{8}}-\d{{6}})\.(pkl|json|onnx)$")


def _members(tf: tarfile.TarFile, archive: Path) -> tuple[str, dict[str, tarfile.TarInfo]]:
    """The release's members by suffix; refuse anything else an archive could carry."""
    found: dict[str, tarfile.TarInfo] = {}
    version = ""
    for m in tf.getmembers():
        match = MEMBER_RE.match(m.name)
        if not m.isfile() or match is None:
            raise IntegrityError(
                f"{archive}: unexpected member {m.name!r}; a release archive holds only "
                f"{MODEL_NAME}_VERSION.pkl, .json and .onnx as plain files")
        if version and match[1] != version:
            raise IntegrityError(f"{archive}: members of two versions ({version}, {match[1]})")
        if match[2] in found:
            raise IntegrityError(f"{archive}: {m.name} appears twice")
        version = match[1]
        found[match[2]] = m
    missing = sorted({"pkl", "json"} - set(found))
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
