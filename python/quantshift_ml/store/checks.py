"""What the store checks before it trusts a model: no links, a valid version, the sha256s.

Kept apart from ``ModelStore`` so the same file checks serve every place that
trusts a release: the store on a host (after the metadata's signature), and
``release.pack_release`` on the controller (before it packs what it ships).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from quantshift_ml.errors import IntegrityError
from quantshift_ml.store.artifact import Artifact, refuse_symlink
from quantshift_ml.store.files import read_json, sha256_file
from quantshift_ml.store.layout import VERSION_RE, meta_for, onnx_for, version_of

log = logging.getLogger(__name__)


def load_artifact(pkl: Path) -> Artifact:
    """A model file and its metadata, read without trusting either (no symlinks)."""
    meta_path = meta_for(pkl)
    for path in (pkl, meta_path, onnx_for(pkl)):
        refuse_symlink(path)
    if not pkl.exists():
        raise IntegrityError(f"{pkl}: model file missing")
    if not meta_path.exists():
        raise IntegrityError(f"{meta_path}: metadata missing for {pkl.name}")
    try:
        meta = read_json(meta_path)
    except (ValueError, OSError) as exc:
        raise IntegrityError(f"{meta_path}: unreadable metadata: {exc}") from exc
    return Artifact(pkl=pkl, meta=meta)


def check_version(art: Artifact) -> None:
    """A version names files: it must be a timestamp, and the one in the file's name."""
    if not VERSION_RE.match(art.version):
        raise IntegrityError(f"{meta_for(art.pkl)}: version {art.version!r} is not "
                             "YYYYMMDD-HHMMSS; refusing it")
    named = version_of(art.pkl)
    if named is not None and named != art.version:
        raise IntegrityError(f"{meta_for(art.pkl)}: version {art.version} does not match "
                             f"its file name ({art.pkl.name}); refusing it")


def check_files(art: Artifact, *, content: bytes | None = None,
                onnx_content: bytes | None = None) -> None:
    """The pickle's (and the compiled model's) sha256 against the metadata's.

    With ``content`` / ``onnx_content`` the check is on those very bytes, so
    what is used afterwards is what was checked.
    """
    pkl = art.pkl
    actual = sha256_file(pkl) if content is None else hashlib.sha256(content).hexdigest()
    if not art.sha256:
        raise IntegrityError(f"{meta_for(pkl)}: no sha256 recorded")
    if actual != art.sha256:
        raise IntegrityError(
            f"{pkl}: sha256 {actual[:12]}... does not match metadata {art.sha256[:12]}... "
            "(file corrupted or tampered with); refusing to load it"
        )
    onnx_sha = (art.meta.get("onnx") or {}).get("sha256")
    if onnx_sha:
        onnx = onnx_for(pkl)
        if onnx_content is None and not onnx.exists():
            raise IntegrityError(f"{onnx}: compiled model named in the metadata is missing")
        actual_onnx = (sha256_file(onnx) if onnx_content is None
                       else hashlib.sha256(onnx_content).hexdigest())
        if actual_onnx != onnx_sha:
            raise IntegrityError(f"{onnx}: sha256 does not match metadata; refusing it")


def check_permissions(root: Path) -> None:
    """Refuse a world-writable store root; warn when others could write it.

    Whoever can write the root can replace models (signatures stop them from
    running forged ones, but not from deleting or swapping good ones).
    """
    try:
        st = root.stat()
    except FileNotFoundError:
        return
    if st.st_mode & 0o002 and not st.st_mode & 0o1000:
        raise IntegrityError(f"{root} is world-writable (mode {st.st_mode & 0o7777:o}); "
                             f"run `chmod o-w {root}` before using it as a model store")
    if st.st_mode & 0o020:
        log.warning("%s is group-writable (mode %o): every member of its group can "
                    "replace models", root, st.st_mode & 0o7777)
    if st.st_uid not in (os.geteuid(), 0):
        log.warning("%s is owned by uid %d, not by this user (%d)", root, st.st_uid,
                    os.geteuid())


def brief(art: Artifact | None) -> dict[str, Any] | None:
    """Version and sha256, the identity results report for a model."""
    if art is None:
        return None
    return {"version": art.version, "sha256": art.sha256}
