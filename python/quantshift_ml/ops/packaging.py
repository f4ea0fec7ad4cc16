"""The training recipe's last step: what a trained champion is packaged with.

The metadata a release is signed with (what was trained, on what, how it scored,
the gate's decision, the libraries), the forest's SHAP importances against the
production model's, and what the service will run (ONNX checked for parity, or a
filter's spec). Kept apart from ``operations`` so the recipe reads on one screen;
nothing here writes to the store.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import socket
from typing import Any

import numpy as np

from quantshift_ml import __version__
from quantshift_ml.insight.explain import importance_summary
from quantshift_ml.model.compiled import compile_checked
from quantshift_ml.model.regimes import serving_spec
from quantshift_ml.monitoring import drift
from quantshift_ml.training.model import regime_model
from quantshift_ml.training.pipeline import TrainResult

log = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    import joblib
    import pandas
    import sklearn

    return {"python": platform.python_version(), "quantshift_ml": __version__,
            "scikit-learn": sklearn.__version__, "numpy": np.__version__,
            "pandas": pandas.__version__, "joblib": joblib.__version__}


def importance(result: TrainResult, incumbent_meta: dict[str, Any]) -> dict[str, Any]:
    """The candidate's global SHAP importances on its holdout, and how they moved
    against the production model's (metadata keys ``importance``, ``importance_drift``)."""
    summary = importance_summary(regime_model(result.bundle),
                                 result.holdout_features.to_numpy(dtype=float))
    out: dict[str, Any] = {"importance": summary}
    now, previous = drift.importances(out), drift.importances(incumbent_meta)
    if now is not None and previous is not None:
        out["importance_drift"] = {"previous": incumbent_meta.get("version"),
                                   **drift.compare_importance(now, previous)}
    return out


def metadata(result: TrainResult, version: str, incumbent: dict[str, Any] | None,
              decision: dict[str, Any], importance: dict[str, Any]) -> dict[str, Any]:
    """The candidate's metadata before staging adds its files, ONNX and signature."""
    return {
        "version": version,
        "family": result.family,
        "trained_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "labeler": result.labeler,
        "features": list(result.bundle["features"]),
        "params": result.config,
        "metrics": result.metrics,
        "baselines": result.baselines,
        "incumbent": incumbent,
        "gate": decision,
        "data": result.data,
        "libraries": library_versions(),
        "training_seconds": result.seconds,
        "champion": result.champion,
        "shadows": result.shadows,
        **importance,
    }


def servable(result: TrainResult, meta: dict[str, Any]) -> bytes | None:
    """What the service will run, recorded in the metadata before it is signed.

    A forest: compiled to ONNX, parity-checked on the holdout (``onnx``) and its
    composition (``serving``). A filter: its spec (``filter``) and its inputs
    (``serving``); no ONNX, no pickle needed to serve it.
    """
    if result.family != "forest":
        spec = result.bundle["model"].spec_dict
        meta["filter"] = spec
        meta["serving"] = {"family": result.family, "features": list(result.bundle["features"]),
                           "classes": list(result.bundle["classes"])}
        log.info("Champion %s: served from its signed spec (cut-off %.4f)", result.family,
                 float(spec["cutoff"]))
        return None
    onnx, onnx_report = compile_checked(regime_model(result.bundle),
                                        result.holdout_features.to_numpy(dtype=float))
    meta["onnx"] = {"parity": onnx_report} if onnx is not None else {"error": onnx_report.get(
        "error"), "parity": onnx_report}
    meta["serving"] = serving_spec(regime_model(result.bundle), list(result.bundle["classes"]))
    if onnx is None:
        log.warning("no compiled (ONNX) model, the service will use scikit-learn: %s",
                    onnx_report.get("error"))
    else:
        log.info("Compiled: ONNX parity ok on %d holdout rows (max |dp| %.1e)",
                 onnx_report["rows"], onnx_report["max_probability_diff"])
    return onnx
