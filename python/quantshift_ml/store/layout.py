"""Paths on a host, compatible with the old shell runbook (see docs/operations.md).

::

    ROOT/models/regime_classifier.pkl      active model (joblib bundle)
    ROOT/models/regime_classifier.json     its metadata (version, sha256, metrics ...)
    ROOT/models/backups/regime_classifier_<version>.pkl (+ .json), last 3 kept
    ROOT/models/staging/                   candidates before promotion
    ROOT/logs/model-training-<version>.log last 10 kept
    ROOT/data/                             market-data cache, prediction log
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from quantshift_ml import defaults

MODEL_NAME = "regime_classifier"
VERSION_RE = re.compile(r"^\d{8}-\d{6}$")


def default_root() -> Path:
    """``--root`` default: ``$QUANTSHIFT_ROOT`` or ``/opt/quantshift``."""
    return Path(os.environ.get("QUANTSHIFT_ROOT", defaults.ROOT))


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def backups(self) -> Path:
        return self.models / "backups"

    @property
    def staging(self) -> Path:
        return self.models / "staging"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def active_pkl(self) -> Path:
        return self.models / f"{MODEL_NAME}.pkl"

    @property
    def active_meta(self) -> Path:
        return self.models / f"{MODEL_NAME}.json"

    @property
    def lock_file(self) -> Path:
        return self.models / ".quantshift.lock"

    @property
    def lease_file(self) -> Path:
        return self.models / ".operation.lease"

    @property
    def journal(self) -> Path:
        return self.models / ".promote-journal.json"

    def backup_pkl(self, version: str) -> Path:
        return self.backups / f"{MODEL_NAME}_{version}.pkl"

    def staged_pkl(self, version: str) -> Path:
        return self.staging / f"{MODEL_NAME}_{version}.pkl"

    def training_log(self, version: str) -> Path:
        return self.logs / f"model-training-{version}.log"

    def ensure(self) -> None:
        for d in (self.models, self.backups, self.staging, self.logs, self.data):
            d.mkdir(parents=True, exist_ok=True)


def meta_for(pkl: Path) -> Path:
    """The metadata file that sits beside an artifact."""
    return pkl.with_suffix(".json")


def onnx_for(pkl: Path) -> Path:
    """The compiled (ONNX) model that sits beside an artifact, when there is one."""
    return pkl.with_suffix(".onnx")


def sidecars(pkl: Path) -> tuple[Path, Path]:
    """Files that travel with a model file: its metadata and its compiled form."""
    return meta_for(pkl), onnx_for(pkl)


def version_of(pkl: Path) -> str | None:
    """``regime_classifier_20260101-020000.pkl`` -> ``20260101-020000``."""
    stem = pkl.stem
    prefix = f"{MODEL_NAME}_"
    if stem.startswith(prefix) and VERSION_RE.match(stem[len(prefix):]):
        return stem[len(prefix):]
    return None
