"""What the store reads before trusting it: an artifact, the active slot's state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from quantshift_ml.errors import IntegrityError

if TYPE_CHECKING:
    from quantshift_ml.store.layout import Layout


@dataclass(frozen=True)
class Artifact:
    """A model file and its metadata, not yet trusted."""

    pkl: Path
    meta: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.meta.get("version", ""))

    @property
    def sha256(self) -> str:
        return str(self.meta.get("sha256", ""))


def refuse_symlink(path: Path) -> None:
    """The store never reads or writes through a link an attacker could have planted."""
    if path.is_symlink():
        raise IntegrityError(
            f"{path} is a symlink; the store never follows links (remove it, or run "
            "`quantshift-ml doctor`)")


@dataclass(frozen=True)
class ActiveState:
    """What the active slot holds: ``ok``, ``missing``, ``hand-copied`` or ``untrusted``.

    ``artifact`` is the trusted identity of the active file: itself when ``ok``, the
    backup whose signed sha256 it matches when ``hand-copied`` (the runbook's
    emergency ``cp``), else ``None``.
    """

    state: str
    artifact: Artifact | None
    detail: str = ""


class StoreView(Protocol):
    """What the store's helpers (``backups``, ``install``, ``recovery``) ask of a store.

    ``ModelStore`` calls them with itself; naming only these members here keeps the
    helpers below ``store.store`` (no import cycle) and says what each may touch.
    """

    layout: Layout
    keep_backups: int

    def verify(self, pkl: Path, *, content: bytes | None = None,
               onnx_content: bytes | None = None) -> Artifact: ...

    def active(self) -> Artifact | None: ...

    def inspect_active(self) -> ActiveState: ...

    def trusted_backups(self) -> list[Artifact]: ...

    def recover(self) -> str | None: ...

    def _prune(self) -> list[str]: ...
