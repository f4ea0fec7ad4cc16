"""High-level operations shared by the CLI, the Ansible modules and (later) the service.

Each returns a JSON-native dict. They raise ``QuantshiftError`` subclasses whose
``exit_code`` the CLI uses; the Ansible modules turn them into ``fail_json``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from quantshift_ml.champion.contest import train_champion
from quantshift_ml.champion.record import champion_brief
from quantshift_ml.data.sources import DataSource
from quantshift_ml.errors import GateRefused, IntegrityError, UsageError
from quantshift_ml.model.features import model_frame, usable
from quantshift_ml.ops import packaging, traininglog
from quantshift_ml.serving.served import check_servable
from quantshift_ml.store import ModelStore, backups
from quantshift_ml.store.backups import BackupCheck
from quantshift_ml.store.checks import load_artifact
from quantshift_ml.store.files import sha256_file
from quantshift_ml.store.layout import VERSION_RE, meta_for, onnx_for
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.gate import (
    GateConfig,
    decide,
    gate_for,
    meets_floor,
    rollback_decision,
    with_record_check,
)
from quantshift_ml.training.model import inputs_frame, predict, predict_proba
from quantshift_ml.training.pipeline import (
    TrainResult,
    check_history,
    score_incumbent,
)
from quantshift_ml.training.results import Scores, Unscored

log = logging.getLogger(__name__)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


Incumbent = tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any]]
"""``_load_incumbent``'s (bundle, reference, signed metadata) of the model in production."""


def _load_incumbent(store: ModelStore) -> Incumbent:
    """The active model (bundle, reference, signed metadata), verified; a broken one is
    reported, never unpickled.

    A file copied by hand from a backup is that backup (the gate compares with
    the model really in place); anything else untrusted is no incumbent.
    """
    state = store.inspect_active()
    if state.state == "missing":
        return None, None, {}
    if state.artifact is None:
        log.warning("active model not usable as incumbent: %s", state.detail)
        return None, {"error": state.detail}, {}
    bundle, art = store.load_model(state.artifact.pkl)
    return bundle, {"version": art.version, "sha256": art.sha256,
                    **({"state": state.state} if state.state != "ok" else {})}, art.meta


def train(
    source: DataSource,
    *,
    root: Path,
    config: TrainConfig | None = None,
    gate: GateConfig | None = None,
    as_of: str | None = None,
    promote: bool = False,
    check_mode: bool = False,
    keep_backups: int = 3,
    keep_logs: int = traininglog.DEFAULT_KEEP_LOGS,
) -> dict[str, Any]:
    """The training recipe: read top to bottom, each step one call into a lower layer.

    Load, then features, labels and split (``check_history``: before anything is
    written, so bad or short data leave the store untouched), then under the
    store's lock the incumbent, the champion's family chosen on the record, fitted
    and scored against the baselines and the incumbent on the same rows
    (``train_champion``), the gate's decision, and the package (metadata, signed
    staging, training log, promotion). No step calls back into this one. With
    ``check_mode`` nothing at all is written; with ``promote`` a refused gate
    raises ``GateRefused`` after its training log is written.
    """
    config = config or TrainConfig()
    gate = gate or gate_for(config.labeler)
    bars = source.load()
    origin = str(source.describe().get("path", source.name))
    prepared = check_history(bars, config, as_of=as_of, origin=origin)
    store = ModelStore(root, keep_backups=keep_backups)
    with _training_lock(store, check_mode):
        incumbent = _load_incumbent(store)
        result = train_champion(prepared.ds.bars, config, incumbent=incumbent[0],
                                incumbent_meta=incumbent[2], origin=origin,
                                source=source.describe(), prepared=prepared)
        decision = _decide(result, gate)
        return _package(store, result, incumbent, decision, promote=promote,
                        check_mode=check_mode, keep_logs=keep_logs)


@contextlib.contextmanager
def _training_lock(store: ModelStore, check_mode: bool) -> Iterator[None]:
    """The store's training lock, a half-done swap recovered first; nothing in check mode."""
    if check_mode:
        yield
        return
    store.keys.require_signer()  # a host that cannot sign trains nothing (exit 2)
    store.layout.ensure()
    with store.lock("train"):
        store.recover()
        yield


def _decide(result: TrainResult, gate: GateConfig) -> dict[str, Any]:
    """The gate on the champion's holdout, the incumbent's and the baselines', and the record."""
    scored = result.incumbent_scores
    return with_record_check(
        decide(result.candidate.holdout, scored if isinstance(scored, Scores) else None,
               gate, result.baseline_scores), (result.champion or {}).get("record_check"))


def _package(store: ModelStore, result: TrainResult, incumbent_triple: Incumbent,
             decision: dict[str, Any], *, promote: bool, check_mode: bool, keep_logs: int
             ) -> dict[str, Any]:
    """Metadata, then (a passed gate) the signed staging, the training log and promotion."""
    _, incumbent_ref, incumbent_meta = incumbent_triple
    # what was in place (version, sha, state) and how it scored on the same rows
    incumbent = {**(incumbent_ref or {}), **(result.incumbent or {})} or None
    version = store.new_version()
    importance = packaging.importance(result, incumbent_meta) if result.family == "forest" else {}
    meta = packaging.metadata(result, version, incumbent, decision, importance)
    out: dict[str, Any] = {"version": version, "family": result.family,
                           "champion": champion_brief(result.champion),
                           "gate": decision, "metrics": result.metrics,
                           "baselines": result.baselines, "incumbent": incumbent,
                           "data": result.data, "labeler": result.labeler,
                           "check_mode": check_mode, "promoted": False, "changed": False}
    if check_mode:
        out["would"] = ("promote" if promote and decision["passed"] else "stage") + f" {version}"
        return out
    log.info("%s", decision["summary"])
    if not decision["passed"]:
        # A refused candidate is never written next to the models: only its log is.
        log_path = traininglog.write(store.layout, meta, keep=keep_logs)
        out.update({"training_log": str(log_path), "changed": True})
        if promote:
            raise GateRefused(decision["summary"] + ": " + "; ".join(decision["reasons"]) +
                              f". Nothing was staged or promoted; see {log_path}", details=out)
        return out
    # the bundle names its own version, so every training is a distinct artifact (sha)
    result.bundle["version"] = version
    onnx = packaging.servable(result, meta)
    art = store.stage(result.bundle, meta, onnx=onnx)
    meta = art.meta
    log_path = traininglog.write(store.layout, meta, keep=keep_logs)
    files = [str(art.pkl), str(meta_for(art.pkl))]
    if onnx is not None:
        files.append(str(onnx_for(art.pkl)))
    out.update({"sha256": art.sha256, "artifact": str(art.pkl), "metadata": str(meta_for(art.pkl)),
                "files": files, "compiled": meta.get("onnx") or {"filter": meta.get("filter")},
                "training_log": str(log_path),
                "changed": True})
    if promote:
        promo = store._install(store.verify(art.pkl), reason="promote")
        out.update({"promoted": True, "previous": promo["previous"], "current": promo["current"],
                    "pruned_backups": promo.get("pruned", [])})
    return out


def status(root: Path) -> dict[str, Any]:
    """What is active on this root, its age and integrity, and the backups.

    ``integrity`` is "ok" or why not; ``file_sha256`` is the file's own sha256,
    beside the metadata's ``sha256``, so a mismatch is visible (the CLI exits 4).
    """
    store = ModelStore(root)
    store.recover_if_interrupted()
    active = store.active()
    state = store.inspect_active()
    info: dict[str, Any] = {"root": str(root), "active": None, "backups": [],
                            "integrity": state.state if state.state != "ok" else "ok"}
    pkl = store.layout.active_pkl
    file_sha = sha256_file(pkl) if pkl.is_file() and not pkl.is_symlink() else None
    if active is not None or file_sha is not None:
        meta = active.meta if active is not None else {}
        trained = meta.get("trained_at")
        age_days = None
        if trained:
            age = _utcnow() - dt.datetime.fromisoformat(str(trained))
            age_days = round(age.total_seconds() / 86400, 2)
        m = meta.get("metrics", {})
        info["active"] = {
            "version": meta.get("version"), "sha256": meta.get("sha256"),
            "file_sha256": file_sha, "trained_at": trained,
            "age_days": age_days, "test_accuracy": m.get("test_accuracy"),
            "cv_accuracy": m.get("cv_accuracy"), "balanced_accuracy": m.get("balanced_accuracy"),
            "labeler": (meta.get("labeler") or {}).get("name"),
            "family": meta.get("family") or "forest",
            "integrity": "ok" if state.state == "ok" else f"{state.state}: {state.detail}",
        }
    info["backups"] = [_backup_entry(c) for c in store.checked_backups()]
    return info


def verify_deployed(store: ModelStore, expect_sha256: str | None = None, *,
                    service_url: str = "", service_timeout: float | None = None,
                    prune: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """The rollout's check of one host: the active model verified and (``expect_sha256``)
    the one shipped; with ``service_url`` the service polled from the host itself until it
    reports that sha (``healthcheck.wait_for_sha``); with ``prune`` old backups pruned."""
    from quantshift_ml import defaults
    from quantshift_ml.store.checks import brief

    art = store.verify(store.layout.active_pkl)
    if expect_sha256 and art.sha256 != expect_sha256:
        raise IntegrityError(f"active model {art.version} (sha256 {art.sha256}) is not the "
                             f"expected sha256 {expect_sha256}")
    result: dict[str, Any] = {"changed": False, "current": brief(art)}
    if service_url:
        if not expect_sha256:
            raise UsageError("service_url needs expect_sha256: the sha the service must report")
        from quantshift_ml.serving.healthcheck import wait_for_sha

        timeout = defaults.SERVICE_TIMEOUT if service_timeout is None else service_timeout
        result["health"] = wait_for_sha(service_url, expect_sha256, timeout=timeout)
    if prune:
        result["pruned"] = store.prune(dry_run=dry_run)
        result["changed"] = bool(result["pruned"])
    return result


def _backup_entry(c: BackupCheck) -> dict[str, Any]:
    """One backup as ``status`` and ``backups`` list it: its identity, and whether a
    rollback would take it (``intact``) or why not (``reason``)."""
    meta = c.artifact.meta if c.artifact is not None else _unverified_meta(c.pkl)
    return {"version": c.version, "sha256": meta.get("sha256"),
            "test_accuracy": (meta.get("metrics") or {}).get("test_accuracy"),
            "family": meta.get("family") or "forest", **c.as_dict()}


def _unverified_meta(pkl: Path) -> dict[str, Any]:
    """A broken backup's metadata as written (shown, never trusted); ``{}`` if unreadable."""
    try:
        return load_artifact(pkl).meta
    except IntegrityError:
        return {}


def verify(root: Path, target: str = "active") -> dict[str, Any]:
    """Verify the active model (default), one backup version, or ``all``.

    Every file asked for is checked and listed with its state; the result's
    ``ok`` is false (the CLI exits 4) when any of them does not check out.
    """
    store = ModelStore(root)
    store.recover_if_interrupted()
    paths = []
    if target in ("active", "all"):
        paths.append(store.layout.active_pkl)
    if target == "all":
        paths += backups.files(store)  # unreadable metadata too: listed as failed
    elif target != "active":
        if not VERSION_RE.match(target):
            raise UsageError(f"--target must be active, all or a version, not {target!r}")
        paths.append(store.layout.backup_pkl(target))
    checked = []
    for p in paths:
        try:
            art = store.verify(p)
            check_servable(art.meta, p)
            checked.append({"file": str(p), "version": art.version, "sha256": art.sha256,
                            "family": art.meta.get("family") or "forest", "state": "ok"})
        except IntegrityError as exc:
            checked.append({"file": str(p), "state": "failed", "error": str(exc)})
    bad = [c for c in checked if c["state"] != "ok"]
    if bad and target != "all":
        raise IntegrityError(bad[0]["error"])
    return {"ok": not bad, "verified": checked, "failed": len(bad)}


def evaluate_artifact(pkl: Path, source: DataSource, *, root: Path,
                      config: TrainConfig | None = None, as_of: str | None = None,
                      floor: float | None = None, force: bool = False) -> dict[str, Any]:
    """Score an existing artifact (e.g. a backup before rollback) on fresh data.

    The artifact is verified before it is unpickled; it is scored on the same
    holdout a fresh candidate would be, with its own labeler, and compared with
    the floor of that labeler's gate (``floor`` overrides it): ``meets_floor``
    and ``decision`` (``gate.rollback_decision``, with ``force``) are the rollback
    decision, made here once for the CLI and the playbook.
    """
    store = ModelStore(root)
    bundle, art = store.load_model(pkl)
    base = config or TrainConfig()
    labeler_name = (art.meta.get("labeler") or {}).get("name", base.labeler)
    cfg = replace(base, labeler=labeler_name)
    # the same holdout a fresh candidate would get, without training one
    prep = check_history(source.load(), cfg, as_of=as_of, origin=source.name)
    scored = score_incumbent(bundle, prep.ds, prep.split)
    scores = scored if isinstance(scored, Scores) else None
    idx = prep.ds.features.index
    holdout = {**source.describe(), "holdout_start": str(idx[prep.split.holdout[0]].date()),
               "holdout_end": str(idx[prep.split.holdout[-1]].date()),
               "last_bar": str(prep.ds.bars.index[-1].date())}
    gate = gate_for(labeler_name, {"floor": floor})
    value = None if scores is None else scores.metric(gate.metric)
    out = {"version": art.version, "sha256": art.sha256,
           "accuracy": None if scores is None else scores.accuracy,
           "balanced_accuracy": None if scores is None else scores.balanced_accuracy,
           "holdout": holdout, "labeler": labeler_name, "metric": gate.metric, "value": value,
           "floor": gate.floor, "meets_floor": meets_floor(value, gate.floor),
           "error": scored.error if isinstance(scored, Unscored) else None}
    return {**out, "decision": rollback_decision(out, force=force)}


def predict_latest(root: Path, source: DataSource) -> dict[str, Any]:
    """Regime of the newest bar with the active (verified) model."""
    store = ModelStore(root)
    store.recover_if_interrupted()
    bundle, art = store.load_model(store.layout.active_pkl)
    bars = source.load()
    feats = inputs_frame(bundle, bars, model_frame(bars, None))[bundle["features"]]
    ok = usable(feats)
    if not ok.any():
        from quantshift_ml.errors import DataError
        raise DataError(f"{source.name}: not enough history to compute features")
    row = feats[ok].iloc[[-1]]
    regime = str(predict(bundle, row)[0])
    as_of, last = row.index[0].date(), bars.index[-1].date()
    if as_of != last:
        log.warning("the newest bar (%s) has no usable features; answering for %s", last, as_of)
    return {"regime": regime, "probabilities": predict_proba(bundle, row)[0],
            "as_of": str(as_of), "last_bar": str(last),
            "bar_age_days": (_utcnow().date() - as_of).days,
            "model_version": art.version, "model_sha256": art.sha256}
