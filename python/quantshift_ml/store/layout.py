"""Paths on a host, compatible with the old shell runbook (README "On a host", GUIDE §2).

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
from dataclasses import dataclass, field
from pathlib import Path

from quantshift_ml import defaults

MODEL_NAME = "regime_classifier"
VERSION_RE = re.compile(r"^\d{8}-\d{6}$")


def default_root() -> Path:
    """``--root`` default: ``$QUANTSHIFT_ROOT`` or ``/opt/quantshift``."""
    return Path(os.environ.get("QUANTSHIFT_ROOT", defaults.ROOT))


@dataclass(frozen=True)
class Layout:
    """Every path of one store, derived from its root once (the module docstring's tree)."""

    root: Path
    models: Path = field(init=False)
    backups: Path = field(init=False)
    staging: Path = field(init=False)
    logs: Path = field(init=False)
    data: Path = field(init=False)
    active_pkl: Path = field(init=False)
    active_meta: Path = field(init=False)
    lock_file: Path = field(init=False)
    lease_file: Path = field(init=False)
    journal: Path = field(init=False)

    def __post_init__(self) -> None:
        models = self.root / "models"
        for name, path in {
            "models": models, "backups": models / "backups", "staging": models / "staging",
            "logs": self.root / "logs", "data": self.root / "data",
            "active_pkl": models / f"{MODEL_NAME}.pkl",
            "active_meta": models / f"{MODEL_NAME}.json",
            "lock_file": models / ".quantshift.lock", "lease_file": models / ".operation.lease",
            "journal": models / ".promote-journal.json",
        }.items():
            object.__setattr__(self, name, path)  # frozen: set once, here

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


def version_of(pkl: Path) -> str | None:
    """``regime_classifier_20260101-020000.pkl`` -> ``20260101-020000``."""
    stem = pkl.stem
    prefix = f"{MODEL_NAME}_"
    if stem.startswith(prefix) and VERSION_RE.match(stem[len(prefix):]):
        return stem[len(prefix):]
    return None
