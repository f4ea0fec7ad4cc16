"""The model the service serves: signed metadata + ONNX, never a pickle.

The service runs on every host and answers the bots, so it is the one place a
forged pickle would run most often. It therefore never unpickles to answer (only
``/regime?explain=1`` loads the pickle, after the same checks: explain.py): it loads the
compiled (ONNX) estimator, whose bytes match the sha256 in the signed metadata,
and composes the five regimes from the metadata's ``serving`` section (feature
order, the estimator's classes, the causal rule, its priors and counterpart,
the labeler's fitted HMM). The ONNX model's parity with scikit-learn was
checked once, at training, on the holdout, and that report is part of what is
signed.

A model without a signed compiled form (trained without the ``serve`` extra, or
whose parity check failed) is refused with the reason; ``predict`` and the
other commands that need scikit-learn load the pickle, after the signature check.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantshift_ml import REGIMES
from quantshift_ml.defaults import FILTER_FAMILIES
from quantshift_ml.errors import IntegrityError
from quantshift_ml.model.compiled import CompiledUnavailable, OnnxPredictor
from quantshift_ml.model.regimes import FILTER_INPUTS as INPUTS
from quantshift_ml.model.regimes import RegimeModel, RegimeRule
from quantshift_ml.store import ModelStore
from quantshift_ml.store.layout import onnx_for

if TYPE_CHECKING:
    from quantshift_ml.model.filterspec import FilterSpec

AB_ONLY = ("atr_ratio",)
"""Read by the A/B rules arm from the served row (``ab.rules_regime``), not by a filter."""

log = logging.getLogger(__name__)
ENGINE = "onnxruntime"


@dataclass(frozen=True)
class _Classes:
    """Stands in for the estimator in ``RegimeModel.finish``, which reads only its classes."""

    classes_: np.ndarray


def _utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Loaded:
    """A verified compiled model ready to serve."""

    meta: dict[str, Any]
    loaded_at: str
    compiled: OnnxPredictor
    composer: RegimeModel
    classes: list[str]
    engine_reason: str = ""
    spec = None  # a forest has no filter spec

    @property
    def engine(self) -> str:
        return ENGINE

    @property
    def family(self) -> str:
        return str(self.meta.get("family") or "forest")

    @property
    def features(self) -> list[str]:
        return list(self.feature_names)

    @functools.cached_property
    def feature_names(self) -> tuple[str, ...]:
        """``features``, computed once (every request asks for them)."""
        return tuple(self.composer.features)

    @functools.cached_property
    def fitted(self) -> dict[str, Any] | None:
        """The labeler's fitted HMM (for the ``hmm_filter`` input), when it has one."""
        fitted = (self.meta.get("labeler") or {}).get("fitted")
        return fitted if isinstance(fitted, dict) else None

    @functools.cached_property
    def version(self) -> str:
        return str(self.meta.get("version"))

    def infer(self, x: np.ndarray) -> tuple[str, dict[str, float]]:
        """Regime and class probabilities of one row (columns in ``features`` order)."""
        row = np.asarray(x, dtype=float)[0]
        return self.infer_row(np.ascontiguousarray(x, dtype=np.float32)[:1],
                              tuple(float(v) for v in row))

    def infer_row(self, x32: np.ndarray, row: tuple[float, ...]) -> tuple[str, dict[str, float]]:
        """``infer`` of a row given both ways the market cache keeps it: float32, shape
        (1, n), for onnxruntime, and Python floats for the composition (issue 28:
        numpy's per-call overhead on five numbers cost more than the trees)."""
        regime, out = self.composer.finish_one(self.compiled.proba_row(x32), row)
        return regime, {c: round(p, 4) for c, p in zip(self.classes, out, strict=True)}


def _spec(meta: dict[str, Any], where: Path) -> dict[str, Any]:
    onnx = meta.get("onnx") or {}
    spec = meta.get("serving")
    if not onnx.get("sha256") or not (onnx.get("parity") or {}).get("ok"):
        why = onnx.get("error") or "no compiled model in its metadata"
        raise IntegrityError(f"{where}: no signed compiled (ONNX) model ({why}); the service "
                             "never unpickles: retrain with the 'serve' extra installed")
    if not isinstance(spec, dict):
        raise IntegrityError(f"{where}: metadata has no 'serving' section (trained by an "
                             "older release); retrain to serve it without unpickling")
    return spec


def check_servable(meta: dict[str, Any], where: Path) -> None:
    """A filter release's signed spec must be complete and valid (``verify`` says so
    before a rollout, not the service after it); a forest's ONNX is checked by sha256."""
    if str(meta.get("family") or "forest") in FILTER_FAMILIES:
        from quantshift_ml.model.filterspec import FilterSpec

        FilterSpec.from_dict(meta.get("filter") or {}, str(where))


@dataclass
class LoadedFilter:
    """A verified filter release ready to serve: its signed spec, nothing compiled."""

    meta: dict[str, Any]
    loaded_at: str
    spec: FilterSpec
    classes: list[str]
    engine_reason: str = ""

    engine = "filterspec"
    fitted = None  # the filter column comes from ``spec``, not from an hmm_filter input

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def features(self) -> list[str]:
        return list(self.feature_names)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The filter's inputs, then what the A/B test's rules arm reads besides them
        (``atr_ratio``; ``sma50_slope`` is a rule input already)."""
        return (*INPUTS, *AB_ONLY)

    @functools.cached_property
    def version(self) -> str:
        return str(self.meta.get("version"))

    def infer(self, x: np.ndarray) -> tuple[str, dict[str, float]]:
        row = tuple(float(v) for v in np.asarray(x, dtype=float)[0])
        return self.infer_row(np.asarray(x, dtype=np.float32)[:1], row)

    def infer_row(self, x32: np.ndarray, row: tuple[float, ...]) -> tuple[str, dict[str, float]]:
        """Regime and probabilities of the row (``INPUTS`` order): the cut-off, the rule."""
        from quantshift_ml.model.filterspec import compose_row

        return compose_row(self.spec, row[:len(INPUTS)])


def _load_filter(art_meta: dict[str, Any], pkl: Path) -> LoadedFilter:
    """A filter release (pandas and the filter code are imported for it, not for a forest)."""
    from quantshift_ml.model.filterspec import FilterSpec

    spec = FilterSpec.from_dict(art_meta.get("filter") or {}, str(pkl))
    return LoadedFilter(meta=art_meta, loaded_at=_utcnow(), spec=spec,
                        classes=list(REGIMES),
                        engine_reason=f"signed {spec.family} spec (cut-off {spec.cutoff:.4f}); "
                                      "no compiled model and no pickle needed")


def load_verified(store: ModelStore, pkl: Path) -> Loaded | LoadedFilter:
    """Signature, sha256s, then onnxruntime on the verified bytes and a one-row smoke test
    (a filter release: signature, sha256, then its spec validated)."""
    store.recover_if_interrupted()
    peek = store.load_artifact(pkl).meta
    if str(peek.get("family") or "forest") in FILTER_FAMILIES:
        return _load_filter(store.verify(pkl).meta, pkl)
    path = onnx_for(pkl)
    data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    art = store.verify(pkl, onnx_content=data)  # the bytes onnxruntime gets are the checked ones
    spec = _spec(art.meta, pkl)
    assert data is not None  # _spec requires a signed onnx sha256, which verify checked
    rule = RegimeRule(**spec["rule"]) if spec.get("rule") else None
    composer = RegimeModel(_Classes(np.asarray(spec["estimator_classes"], dtype=object)),
                           list(spec["features"]), rule, float(spec.get("threshold", 0.5)),
                           priors=spec.get("priors"), counterpart=spec.get("counterpart"))
    try:
        predictor = OnnxPredictor.from_bytes(data, list(spec["estimator_classes"]))
        x = np.zeros((1, len(composer.features)))
        composer.finish(predictor.run(x)[1], x)
    except CompiledUnavailable:
        raise
    except Exception as exc:  # onnxruntime raises its own exception types
        raise IntegrityError(f"{path}: onnxruntime cannot run it: {type(exc).__name__}: "
                             f"{exc}") from exc
    parity = (art.meta.get("onnx") or {}).get("parity") or {}
    reason = (f"signed compiled model, parity checked at training on {parity.get('rows')} "
              f"holdout rows (max |dp| {float(parity.get('max_probability_diff', 0)):.1e})")
    return Loaded(meta=art.meta, loaded_at=_utcnow(), compiled=predictor, composer=composer,
                  classes=list(spec["classes"]), engine_reason=reason)


class ModelHolder:
    """The model currently served; reloads are serialised, the swap is one assignment."""

    def __init__(self, root: Path) -> None:
        self.store = ModelStore(root)
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self.current: Loaded | LoadedFilter | None = None
        self.error: str | None = "not loaded yet"

    def load(self) -> bool:
        """Load the active model; keep serving the previous one when that fails."""
        with self._reload_lock:
            try:
                loaded = load_verified(self.store, self.store.layout.active_pkl)
            except Exception as exc:  # unsigned, forged, missing file, no compiled model
                reason = f"cannot load the active model: {type(exc).__name__}: {exc}"
                log.error("%s", reason)
                with self._lock:
                    self.error = reason
                return False
            with self._lock:
                self.current, self.error = loaded, None
        log.info("serving model %s (sha256 %s) with %s: %s", loaded.meta.get("version"),
                 str(loaded.meta.get("sha256"))[:12], loaded.engine, loaded.engine_reason)
        return True

    def get(self) -> tuple[Loaded | LoadedFilter | None, str | None]:
        with self._lock:
            return self.current, self.error
