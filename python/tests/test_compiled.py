"""Compiled (ONNX) inference: parity, sha in metadata, follows the model everywhere,
and the service, which never unpickles, refuses clearly when it cannot be trusted or run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from quantshift_ml.data import BundledSource
from quantshift_ml.errors import IntegrityError
from quantshift_ml.model import compiled
from quantshift_ml.model.compiled import OnnxPredictor, compile_checked
from quantshift_ml.model.features import model_frame, usable
from quantshift_ml.ops import operations
from quantshift_ml.serving.served import load_verified
from quantshift_ml.serving.service import RegimeService
from quantshift_ml.store import ModelStore
from quantshift_ml.store.files import sha256_file
from quantshift_ml.training.pipeline import train_candidate

from .conftest import FAST, OPEN


def test_parity_with_scikit_learn(bars) -> None:
    res = train_candidate(bars, FAST)
    x = res.holdout_features.to_numpy(dtype=float)
    data, report = compile_checked(res.bundle["model"], x)
    assert data is not None and report["ok"] and report["labels_identical"]
    assert report["rows"] == len(x) > 0
    assert report["max_probability_diff"] <= 1e-5
    model = res.bundle["model"]
    est_classes = [str(c) for c in model.estimator.classes_]
    assert est_classes == ["calm", "turbulent"]  # hmm: ONNX runs the learned axis only
    _, est_proba = OnnxPredictor.from_bytes(data, est_classes).run(x)
    np.testing.assert_allclose(est_proba, model.estimator.predict_proba(x), atol=1e-5)
    labels, proba = model.finish(est_proba, x)  # the composition the service runs after it
    np.testing.assert_array_equal(labels, model.predict(x).astype(object))
    np.testing.assert_allclose(proba, model.predict_proba(x), atol=1e-5)


def test_onnx_sha_recorded_and_follows_stage_promote_backups_prune_rollback(
        tmp_path: Path) -> None:
    a = operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True,
                         as_of="2018-06-29", keep_backups=1)
    # a staged candidate carries regime_classifier_<version>.onnx with its sha
    b = operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN,
                         as_of="2018-09-28")
    staged_onnx = tmp_path / f"models/staging/regime_classifier_{b['version']}.onnx"
    assert str(staged_onnx) in b["files"]
    assert b["compiled"]["sha256"] == sha256_file(staged_onnx)
    assert b["compiled"]["parity"]["ok"] and b["compiled"]["file"] == staged_onnx.name
    store = ModelStore(tmp_path, keep_backups=1)
    store.promote(tmp_path / f"models/staging/regime_classifier_{b['version']}.pkl")
    onnx = tmp_path / "models/regime_classifier.onnx"
    active = store.verify(store.layout.active_pkl)  # checks both shas
    assert active.version == b["version"] and active.meta["onnx"]["sha256"] == sha256_file(onnx)
    assert not staged_onnx.exists()  # the promoted candidate left staging, onnx included
    backup_a = tmp_path / f"models/backups/regime_classifier_{a['version']}.onnx"
    assert sha256_file(backup_a) == json.loads(
        backup_a.with_suffix(".json").read_text())["onnx"]["sha256"]
    # a third promotion prunes A's backup, its onnx with it (keep 1)
    c = operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True,
                         keep_backups=1)
    assert not backup_a.exists() and not backup_a.with_suffix(".pkl").exists()
    assert sorted(p.name for p in (tmp_path / "models/backups").iterdir()) == [
        f"regime_classifier_{b['version']}.{ext}" for ext in ("json", "onnx", "pkl")]
    assert ModelStore(tmp_path).verify(store.layout.active_pkl).version == c["version"]
    # rollback brings B's onnx back beside B's pkl
    store.rollback("latest")
    back = store.verify(store.layout.active_pkl)
    assert back.version == b["version"]
    assert sha256_file(onnx) == back.meta["onnx"]["sha256"] == b["compiled"]["sha256"]
    assert load_verified(store, store.layout.active_pkl).engine == "onnxruntime"


def test_tampered_onnx_is_refused(tmp_path: Path) -> None:
    operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    onnx = tmp_path / "models/regime_classifier.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="onnx"):
        ModelStore(tmp_path).verify(tmp_path / "models/regime_classifier.pkl")
    service = RegimeService(tmp_path, BundledSource(), "SPY")
    assert not service.reload()
    code, body = service.health()
    assert code == 503 and "onnx" in body["error"] and "does not match" in body["error"]
    onnx.unlink()  # a missing compiled model named in the metadata is refused too
    assert not service.reload() and "missing" in service.health()[1]["error"]


def test_service_serves_the_compiled_model_with_the_same_answers(tmp_path: Path) -> None:
    out = operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    service = RegimeService(tmp_path, BundledSource(), "SPY")
    assert service.reload()
    code, health = service.health()
    assert code == 200 and health["engine"] == "onnxruntime"
    assert "parity" in health["engine_reason"]
    code, body = service.regime("SPY")
    assert code == 200 and body["engine"] == "onnxruntime"
    assert body["model_version"] == out["version"]
    # scikit-learn (the pickle, loaded after its signature check) gives the same
    # regime and probabilities on the same rows as what the service serves
    store = ModelStore(tmp_path)
    fast = load_verified(store, store.layout.active_pkl)
    bundle, _ = store.load_model(store.layout.active_pkl)
    feats = model_frame(BundledSource().load(), bundle["labeler"])
    x = feats[usable(feats)][fast.features].to_numpy(dtype=float)[-300:]
    model = bundle["model"]
    for row in x:
        regime, proba = fast.infer(row[None, :])
        assert regime == str(model.predict(row[None, :])[0])
        np.testing.assert_allclose(list(proba.values()), model.predict_proba(row[None, :])[0],
                                   atol=1e-4)


def test_service_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    import pickle

    import joblib

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the service unpickled something")

    monkeypatch.setattr(joblib, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    service = RegimeService(tmp_path, BundledSource(), "SPY")
    assert service.reload() and service.regime("SPY")[0] == 200


def test_without_skl2onnx_training_succeeds_and_the_service_refuses_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skl2onnx", None)  # import fails as if not installed
    out = operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    assert out["promoted"] and "skl2onnx is not installed" in out["compiled"]["error"]
    assert not any(f.endswith(".onnx") for f in out["files"])
    assert not (tmp_path / "models/regime_classifier.onnx").exists()
    meta = json.loads((tmp_path / "models/regime_classifier.json").read_text())
    assert "sha256" not in meta["onnx"] and "skl2onnx" in meta["onnx"]["error"]
    service = RegimeService(tmp_path, BundledSource(), "SPY")
    assert not service.reload()
    code, health = service.health()
    assert code == 503 and "never unpickles" in health["error"]
    assert "skl2onnx is not installed" in health["error"]
    assert operations.predict_latest(tmp_path, BundledSource())["regime"]  # the CLI still can


def test_failed_parity_is_not_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "PARITY_TOLERANCE", -1.0)  # nothing can pass
    out = operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    assert out["compiled"]["error"] == "parity check failed"
    assert out["compiled"]["parity"]["ok"] is False
    assert not (tmp_path / "models/regime_classifier.onnx").exists()
    service = RegimeService(tmp_path, BundledSource(), "SPY")
    assert not service.reload() and "parity check failed" in service.health()[1]["error"]


def test_without_onnxruntime_at_serve_time_the_service_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    service = RegimeService(tmp_path, BundledSource(), "SPY")
    assert not service.reload()
    code, health = service.health()
    assert code == 503 and "onnxruntime is not installed" in health["error"]
    assert service.regime("SPY")[0] == 503


@pytest.mark.parametrize("labeler", ["hmm", "rules"])
def test_one_row_composition_equals_the_array_one(bars, labeler: str) -> None:
    """``finish_one`` (the service's path) gives exactly ``finish``'s labels and probabilities,
    with a rule (hmm) and without (rules: the forest predicts the regimes itself)."""
    from dataclasses import replace

    res = train_candidate(bars, replace(FAST, labeler=labeler))
    model = res.bundle["model"]
    feats = model_frame(bars, res.bundle["labeler"])
    x = feats[usable(feats)][model.features].to_numpy(dtype=float)
    proba = model.estimator.predict_proba(x)
    labels, full = model.finish(proba, x)
    for i in range(len(x)):
        label, row = model.finish_one(proba[i], x[i])
        assert label == str(labels[i]) and row == pytest.approx(list(full[i]), abs=1e-12), i
