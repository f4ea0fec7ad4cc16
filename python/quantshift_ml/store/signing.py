"""Signed releases: the fleet's Ed25519 key is the trust anchor, not the sha256.

A sha256 in a sidecar only proves that a file matches the metadata beside it;
anyone who can write one can write both. So the training host signs each
release's metadata (which names the sha256 of the pickle and of the compiled
model, and the compiled model's parity report) with the fleet's private key,
and every command and host verifies that signature against the public keys
installed in its keys directory before it reads anything else of the release.

Keys directory (``--keys`` / ``$QUANTSHIFT_KEYS``, default ``/etc/quantshift/keys``)::

    signing.key            private key, PEM (training host only, 0600 or 0640)
    signing.pub            its public key (written by ``keys generate``, to install)
    trusted/*.pub          public keys accepted for verification (rotation: several)

The key id is the first 16 hex digits of the sha256 of the raw public key.
Rotation: install the new public key next to the old one, switch the signing
key, and remove the old public key once no backup signed with it is needed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantshift_ml import defaults
from quantshift_ml.errors import IntegrityError, UsageError

DEFAULT_KEYS_DIR = defaults.KEYS_DIR
KEYS_ENV = "QUANTSHIFT_KEYS"
SIGNATURE = "signature"
ALGORITHM = "ed25519"


def keys_dir() -> Path:
    """The keys directory this process uses: ``$QUANTSHIFT_KEYS`` or the default."""
    return Path(os.environ.get(KEYS_ENV) or DEFAULT_KEYS_DIR)


def canonical(meta: dict[str, Any]) -> bytes:
    """The bytes that are signed: the metadata without its signature, key-sorted, compact."""
    body = {k: v for k, v in meta.items() if k != SIGNATURE}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _raw(public: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(public.public_bytes(serialization.Encoding.Raw,
                                     serialization.PublicFormat.Raw))


def _public_pem(public: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(public.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo))


def load_public(pem: bytes, where: str) -> tuple[str, Any]:
    """(key id, Ed25519 public key) from PEM; anything else is refused by name."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        public = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise IntegrityError(f"{where}: not a PEM public key ({exc})") from exc
    if not isinstance(public, Ed25519PublicKey):
        raise IntegrityError(f"{where}: not an Ed25519 public key")
    return key_id(_raw(public)), public


@dataclass
class Keyring:
    """The trusted public keys of one keys directory, and its signing key if present."""

    directory: Path
    _trusted: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def default(cls) -> Keyring:
        return cls(keys_dir())

    @property
    def signing_key_file(self) -> Path:
        return self.directory / "signing.key"

    @property
    def trusted_dir(self) -> Path:
        return self.directory / "trusted"

    def trusted(self) -> dict[str, Any]:
        """key id -> public key for every ``trusted/*.pub`` (read once per keyring)."""
        if self._trusted is None:
            found: dict[str, Any] = {}
            if self.trusted_dir.is_dir():
                for pub in sorted(self.trusted_dir.glob("*.pub")):
                    kid, key = load_public(pub.read_bytes(), str(pub))
                    found[kid] = key
            self._trusted = found
        return self._trusted

    def can_sign(self) -> bool:
        return self.signing_key_file.is_file()

    def require_signer(self) -> str:
        """The signing key's id; raise UsageError (exit 2) naming the fix when there is none."""
        return key_id(_raw(self._private().public_key()))

    def _private(self, path: Path | None = None) -> Any:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        path = path or self.signing_key_file
        if not path.is_file():
            raise UsageError(
                f"no signing key at {path}: only the training host signs releases. Install "
                "the fleet key there (site.yml from Vault: quantshift_signing_key) or, for a "
                f"local store, run `quantshift-ml keys generate --keys {self.directory}`")
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as exc:
            raise UsageError(f"{path}: not a PEM private key ({exc})") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise UsageError(f"{path}: not an Ed25519 private key")
        return key

    def sign(self, meta: dict[str, Any]) -> dict[str, Any]:
        """``meta`` with a signature over everything else in it."""
        private = self._private()
        kid = key_id(_raw(private.public_key()))
        value = base64.b64encode(private.sign(canonical(meta))).decode()
        return {**meta, SIGNATURE: {"algorithm": ALGORITHM, "key_id": kid, "value": value}}

    def check(self, meta: dict[str, Any], where: Path) -> str:
        """Verify ``meta``'s signature; return the key id or raise IntegrityError naming it."""
        from cryptography.exceptions import InvalidSignature

        sig = meta.get(SIGNATURE)
        if not isinstance(sig, dict) or not sig.get("value"):
            raise IntegrityError(
                f"{where}: unsigned release; refusing it (only models signed with a trusted "
                f"fleet key are loaded: trusted keys in {self.trusted_dir})")
        kid = str(sig.get("key_id", ""))
        trusted = self.trusted()
        if not trusted:
            raise IntegrityError(
                f"{where}: no trusted public key in {self.trusted_dir}; install the fleet's "
                "public key (site.yml: quantshift_trusted_keys) before loading any model")
        if sig.get("algorithm") != ALGORITHM or kid not in trusted:
            raise IntegrityError(
                f"{where}: signed with key {kid or '?'}, which is not trusted here "
                f"(trusted: {', '.join(sorted(trusted))}); refusing it")
        try:
            trusted[kid].verify(base64.b64decode(str(sig["value"]), validate=True),
                                canonical(meta))
        except (InvalidSignature, ValueError) as exc:
            raise IntegrityError(
                f"{where}: signature by key {kid} does not match the metadata "
                "(forged or altered); refusing it") from exc
        return kid


def generate(directory: Path) -> dict[str, Any]:
    """A new key pair in ``directory`` (signing.key 0600, trusted/<id>.pub); never overwrites."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ring = Keyring(directory)
    if ring.signing_key_file.exists():
        kid, _ = load_public(public_pem(ring.signing_key_file), str(ring.signing_key_file))
        return {"changed": False, "key_id": kid, "signing_key": str(ring.signing_key_file),
                "public_key": str(ring.trusted_dir / f"{kid}.pub")}
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(ring.signing_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    kid = key_id(_raw(private.public_key()))
    ring.trusted_dir.mkdir(parents=True, exist_ok=True)
    pub = ring.trusted_dir / f"{kid}.pub"
    pub.write_bytes(_public_pem(private.public_key()))
    (directory / "signing.pub").write_bytes(_public_pem(private.public_key()))
    return {"changed": True, "key_id": kid, "signing_key": str(ring.signing_key_file),
            "public_key": str(pub)}


def public_pem(private_key_file: Path) -> bytes:
    """The PEM public key of a private key file (to install on every host)."""
    return _public_pem(Keyring(private_key_file.parent)._private(private_key_file).public_key())
