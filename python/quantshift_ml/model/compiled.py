"""Compiled inference: the forest exported to ONNX and run with onnxruntime.

scikit-learn's per-call overhead dominates one-row predictions (tens of ms); the
same trees in onnxruntime answer in microseconds. The export is only trusted
after a parity check on the candidate's holdout: identical labels and class
probabilities within 1e-5. Without skl2onnx/onnxruntime, or when parity fails,
everything still works on scikit-learn and the metadata says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

PARITY_TOLERANCE = 1e-5
TARGET_OPSET = 17


class CompiledUnavailable(RuntimeError):
    """ONNX export or runtime not possible here (missing package, unsupported model)."""


def export(model: Any, n_features: int) -> bytes:
    """Serialise a fitted forest to ONNX (float32 input, labels + probability matrix)."""
    try:
        from skl2onnx import to_onnx
    except ImportError as exc:
        raise CompiledUnavailable("skl2onnx is not installed (extra 'serve')") from exc
    sample = np.zeros((1, n_features), dtype=np.float32)
    onx = to_onnx(model, sample, options={id(model): {"zipmap": False}},
                  target_opset=TARGET_OPSET)
    return bytes(onx.SerializeToString())


@dataclass
class OnnxPredictor:
    """An onnxruntime session over an exported forest, single-threaded (latency first)."""

    classes: list[str]
    _session: Any
    _input: str
    _proba: list[str] | None = None

    @classmethod
    def from_bytes(cls, data: bytes, classes: list[str]) -> OnnxPredictor:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise CompiledUnavailable("onnxruntime is not installed (extra 'serve')") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in sess.get_outputs()]
        return cls(classes=list(classes), _session=sess, _input=sess.get_inputs()[0].name,
                   _proba=outputs[1:2] or None)

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels (object array) and probabilities (n, classes) for float rows."""
        labels, proba = self._session.run(None, {self._input: x.astype(np.float32)})
        return np.asarray([str(v) for v in labels], dtype=object), np.asarray(proba)

    def proba_row(self, x32: np.ndarray) -> list[float]:
        """Class probabilities of one float32 row (shape (1, n)) as Python floats.

        The service's path: only the probabilities are asked for (the labels'
        string tensor is neither converted nor copied), and the caller passes the
        row already in float32 (its market cache keeps it), so nothing is copied.
        """
        if self._proba is None:  # an export without a separate probabilities output
            return [float(v) for v in self.run(x32)[1][0]]
        return list(self._session.run(self._proba, {self._input: x32})[0][0].tolist())


def parity(predictor: OnnxPredictor, model: Any, x: np.ndarray) -> dict[str, Any]:
    """Compare ONNX with scikit-learn on the same rows (JSON-native report).

    ``model`` is a ``RegimeModel``: its estimator's probabilities are compared,
    and the regimes the service would answer (``finish`` of each side's
    probabilities), which is what the bots see.
    """
    _, proba = predictor.run(x)
    sk_proba = model.estimator.predict_proba(x)
    labels, _ = model.finish(proba, x)
    sk_labels, _ = model.finish(sk_proba, x)
    diff = float(np.abs(proba - sk_proba).max()) if len(x) else 0.0
    same = bool((np.asarray(labels, dtype=object) == np.asarray(sk_labels, dtype=object)).all())
    return {"rows": len(x), "labels_identical": same, "max_probability_diff": diff,
            "tolerance": PARITY_TOLERANCE, "ok": same and diff <= PARITY_TOLERANCE}


def compile_checked(model: Any, x_holdout: np.ndarray) -> tuple[bytes | None, dict[str, Any]]:
    """Export ``model.estimator`` (of a ``RegimeModel``) and parity-check it;
    ``(None, reason)`` when it cannot be trusted."""
    est = model.estimator
    try:
        data = export(est, x_holdout.shape[1])
        report = parity(OnnxPredictor.from_bytes(data, [str(c) for c in est.classes_]),
                        model, x_holdout)
    except CompiledUnavailable as exc:
        return None, {"ok": False, "error": str(exc)}
    except Exception as exc:
        return None, {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if not report["ok"]:
        return None, {**report, "error": "parity check failed"}
    return data, report
