"""Compiled (ONNX) inference: parity, sha in metadata, follows the model everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantshift_ml import operations
from quantshift_ml.compiled import OnnxPredictor, compile_checked
from quantshift_ml.data import BundledSource
from quantshift_ml.errors import IntegrityError
from quantshift_ml.service import RegimeService
from quantshift_ml.store import ModelStore
from quantshift_ml.store.files import sha256_file
from quantshift_ml.training import train_candidate

from .conftest import FAST


def test_parity_with_scikit_learn(bars) -> None:
    res = train_candidate(bars, FAST)
    x = res.holdout_features.to_numpy(dtype=float)
    data, report = compile_checked(res.bundle["model"], x)
    assert data is not None and report["ok"] and report["labels_identical"]
    assert report["max_probability_diff"] <= 1e-5
    labels, proba = OnnxPredictor.from_bytes(data, res.bundle["classes"]).run(x)
    np.testing.assert_array_equal(labels, res.bundle["model"].predict(x).astype(object))
    assert proba.shape == (len(x), len(res.bundle["classes"]))


def test_onnx_follows_the_model_through_promote_backup_and_rollback(tmp_path: Path) -> None:
    first = operations.train(BundledSource(), root=tmp_path, config=FAST, promote=True,
                             as_of="2018-06-29")
    second = operations.train(BundledSource(), root=tmp_path, config=FAST, promote=True)
    store = ModelStore(tmp_path)
    active = store.verify(store.layout.active_pkl)
    onnx = tmp_path / "models/regime_classifier.onnx"
    assert active.meta["onnx"]["sha256"] == sha256_file(onnx)
    assert active.meta["onnx"]["parity"]["ok"]
    assert any(f.endswith(".onnx") for f in second["files"])
    backup_onnx = tmp_path / f"models/backups/regime_classifier_{first['version']}.onnx"
    assert backup_onnx.exists()
    store.rollback("latest")
    assert store.verify(store.layout.active_pkl).version == first["version"]
    assert sha256_file(onnx) == sha256_file(backup_onnx)


def test_tampered_onnx_is_refused(tmp_path: Path) -> None:
    operations.train(BundledSource(), root=tmp_path, config=FAST, promote=True)
    onnx = tmp_path / "models/regime_classifier.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="onnx"):
        ModelStore(tmp_path).verify(tmp_path / "models/regime_classifier.pkl")


def test_service_serves_the_compiled_model(tmp_path: Path) -> None:
    out = operations.train(BundledSource(), root=tmp_path, config=FAST, promote=True)
    service = RegimeService(tmp_path, BundledSource(), "SPY")
    assert service.reload()
    code, health = service.health()
    assert code == 200 and health["engine"] == "onnxruntime"
    code, body = service.regime("SPY")
    assert code == 200 and body["engine"] == "onnxruntime"
    assert body["model_version"] == out["version"]
