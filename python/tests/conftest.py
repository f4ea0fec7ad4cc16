"""Shared fixtures: real bundled market data, small fast model settings."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from quantshift_ml.data import BundledSource
from quantshift_ml.store import signing
from quantshift_ml.training.config import ModelParams, TrainConfig
from quantshift_ml.training.gate import gate_for

FAST = TrainConfig(model=ModelParams(n_estimators=25), cv_folds=3, families=("forest",))
"""A smaller forest keeps the suite quick; the procedure under test is unchanged. A
field of one family (the forest) needs no record: the store, service and monitor
mechanics are tested on the forest's path here, the contest of families and the
filter's path in test_contest.py."""
OPEN = gate_for("hmm", {"beat_baseline": "none", "max_regression": 1.0})
"""A gate that lets every candidate through: for tests of the store, service and
monitor mechanics, which promote models at dates whose holdouts the default gate
may refuse (the gate itself is tested in test_baselines_gate and test_training)."""


@pytest.fixture(scope="session")
def fleet_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fleet key pair for the session: signing key + its trusted public key."""
    keys = tmp_path_factory.mktemp("keys")
    signing.generate(keys)
    return keys


@pytest.fixture(scope="session", autouse=True)
def _keys_env(fleet_keys: Path) -> Iterator[None]:
    """Every store in the session trusts (and signs with) the session's fleet key.

    Session-scoped so that module-scoped fixtures which train models see it too.
    """
    old = os.environ.get(signing.KEYS_ENV)
    os.environ[signing.KEYS_ENV] = str(fleet_keys)
    yield
    if old is None:
        os.environ.pop(signing.KEYS_ENV, None)
    else:
        os.environ[signing.KEYS_ENV] = old


@pytest.fixture(scope="session")
def bars() -> pd.DataFrame:
    return BundledSource().load()


@pytest.fixture(scope="session")
def yahoo_csv(tmp_path_factory: pytest.TempPathFactory, bars: pd.DataFrame) -> Path:
    """The last ~4 years of bundled data written as a plain Yahoo CSV."""
    path = tmp_path_factory.mktemp("csv") / "spy.csv"
    frame = bars.iloc[-1000:].copy()
    frame.insert(4, "Adj Close", frame["Close"])
    frame.reset_index().assign(Date=lambda d: d["Date"].dt.strftime("%Y-%m-%d")).to_csv(
        path, index=False)
    return path


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root: "byte-identical" made checkable."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def serving(root: Path) -> Iterator[tuple[Any, Callable[[str], dict]]]:
    """A RegimeService on 127.0.0.1 (port 0) over ``root``, and a GET returning JSON."""
    import json
    import threading
    import urllib.request

    from quantshift_ml.serving.service import RegimeService, build_server

    service = RegimeService(root, BundledSource(), "SPY")
    assert service.reload()
    server = build_server(service, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def get(path: str) -> dict:
        with urllib.request.urlopen(base + path, timeout=60) as resp:
            return json.loads(resp.read())

    try:
        yield service, get
    finally:
        server.shutdown()
        server.server_close()
        service.close()
