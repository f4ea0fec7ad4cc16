"""Why the model said what it said: exact SHAP values of the forest.

``shap.TreeExplainer`` computes exact Shapley values for tree ensembles (TreeSHAP,
Lundberg et al. 2020): for one row, each feature's contribution to the forest's
probability of a class, such that ``base_value + sum(contributions)`` equals that
probability (up to float rounding). The base value is the forest's mean
probability over its training data.

What is explained is the probability behind the served regime:

* ``hmm`` labeler: the forest predicts calm / turbulent and a causal rule picks the
  regime on that side (regimes.py), so the regime's probability *is* the forest's
  probability of that volatility state; the explanation is of that state.
  With ``combine="max"`` the served P(turbulent) is the larger of the forest's
  and the ``hmm_filter`` input's: ``decided_by`` names which one it was, and
  ``base_value + sum(contributions)`` is always ``forest_probability`` (the
  forest's own, exactly); when the filter decided, ``probability`` is the
  filter's and the forest's decomposition shows why it said less.
* ``rules`` / ``forward``: the forest predicts the regime itself; the explanation is
  of the predicted class.

Only tree models can be explained exactly: the soft-voting ensemble holds a
logistic regression, and an approximate explainer would present a guess as an
exact decomposition, so ``explain`` refuses it with the reason. ``shap`` (the
``explain`` extra) is imported only here, when an explanation is asked for: it
pulls in numba and takes seconds to import, which the service's ordinary
requests must not pay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from quantshift_ml import REGIMES
from quantshift_ml.errors import UsageError
from quantshift_ml.model.regimes import CALM, TURBULENT, TURBULENT_REGIMES, RegimeModel

METHOD = "shap.TreeExplainer (exact TreeSHAP, tree_path_dependent)"
SUMMARY_DIGITS = 6


def tree_estimator(model: RegimeModel) -> Any:
    """The forest inside ``model``, or a UsageError saying why there is none."""
    est = model.estimator
    if hasattr(est, "named_estimators_"):
        raise UsageError("this model is a soft-voting ensemble (forest + gradient boosting + "
                         "logistic regression): it has no exact SHAP decomposition; "
                         "train with --estimator forest (the default) to explain it")
    if not hasattr(est, "estimators_"):
        raise UsageError(f"cannot explain a {type(est).__name__}: not a fitted tree ensemble")
    return est


def _import_shap() -> Any:
    try:
        import shap
    except ImportError as exc:
        raise UsageError("explanations need the 'explain' extra: "
                         "pip install 'quantshift-ml[explain]'") from exc
    return shap


@dataclass(frozen=True)
class Explanation:
    """One row's answer and its exact decomposition (JSON via ``as_dict``)."""

    date: str | None
    regime: str
    explained: str
    probability: float
    base_value: float
    contributions: list[dict[str, Any]]
    forest_probability: float = 0.0
    decided_by: str = "forest"

    def as_dict(self) -> dict[str, Any]:
        return {"date": self.date, "regime": self.regime, "explained": self.explained,
                "probability": self.probability, "base_value": self.base_value,
                "forest_probability": self.forest_probability, "decided_by": self.decided_by,
                "contributions": self.contributions}


class Explainer:
    """A TreeExplainer over one model's forest (building it takes milliseconds)."""

    def __init__(self, model: RegimeModel) -> None:
        self.model = model
        self.forest = tree_estimator(model)
        self.classes = [str(c) for c in self.forest.classes_]
        self._tree = _import_shap().TreeExplainer(self.forest)

    def values(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SHAP values (rows, features, classes) and base values (classes,).

        shap returns a list per class in older releases and one array in newer ones.
        """
        # additivity (base + sum == probability) is tested, not re-checked per call:
        # shap would predict the whole forest a second time on every request
        raw = self._tree.shap_values(np.asarray(x, dtype=float), check_additivity=False)
        sv = np.stack(raw, axis=-1) if isinstance(raw, list) else np.asarray(raw)
        if sv.ndim == 2:  # a single-output model
            sv = sv[:, :, None]
        base = np.atleast_1d(np.asarray(self._tree.expected_value, dtype=float))
        return sv, base

    def _explained_class(self, proba_row: np.ndarray, regime: str) -> int:
        if self.model.rule is None:
            return int(np.argmax(np.round(proba_row, 6)))
        if TURBULENT not in self.classes:  # trained on calm rows only
            return self.classes.index(CALM)
        return self.classes.index(TURBULENT if regime in TURBULENT_REGIMES else CALM)

    def explain(self, x: np.ndarray, dates: list[str] | None = None) -> list[Explanation]:
        """The regime of each row and the exact contributions to its probability."""
        x = np.asarray(x, dtype=float)
        sv, base = self.values(x)
        # TreeSHAP is exact (local accuracy): base + contributions *is* the forest's
        # probability, to float precision (tested against predict_proba on every day
        # of 2008-2018). Summing them avoids predict_proba, which costs a one-row
        # request ten times the SHAP values themselves (joblib over 100 trees).
        proba = base[None, :] + sv.sum(axis=1)
        regimes, served = self.model.finish(proba, x)
        # with a counterpart (max rule) the served probability may be the HMM
        # filter's; the decomposition stays the forest's, and says so
        decided = self.model.decided_by(proba, x)
        out = []
        for i in range(len(x)):
            regime = str(regimes[i])
            k = self._explained_class(proba[i], regime)
            p_served = (float(served[i, REGIMES.index(regime)]) if self.model.rule is not None
                        else float(proba[i, k]))
            contrib: list[dict[str, Any]] = [
                {"feature": f, "value": float(x[i, j]), "shap": float(sv[i, j, k])}
                for j, f in enumerate(self.model.features)]
            contrib.sort(key=lambda c: -abs(c["shap"]))
            out.append(Explanation(date=dates[i] if dates else None, regime=regime,
                                   explained=self.classes[k], probability=p_served,
                                   base_value=float(base[k]), contributions=contrib,
                                   forest_probability=float(proba[i, k]),
                                   decided_by=str(decided[i])))
        return out

    def summary(self, x: np.ndarray) -> dict[str, Any]:
        """Mean |SHAP| per feature, per class and averaged over classes, on rows ``x``."""
        sv, _ = self.values(x)
        mean_abs = np.abs(sv).mean(axis=0)  # (features, classes)
        names = self.model.features

        def table(col: np.ndarray) -> dict[str, float]:
            return {f: round(float(v), SUMMARY_DIGITS) for f, v in zip(names, col, strict=True)}

        return {"method": METHOD, "rows": len(x),
                "mean_abs": table(mean_abs.mean(axis=1)),
                "per_class": {c: table(mean_abs[:, k]) for k, c in enumerate(self.classes)}}


def importance_summary(model: RegimeModel, x: np.ndarray) -> dict[str, Any]:
    """The metadata's ``importance`` section, or the reason there is none (never raises).

    Training must not fail because explanations are unavailable (an ensemble, a
    host without the extra): the summary then records why, and the drift check
    says "unknown" for that version instead of inventing a number.
    """
    try:
        return Explainer(model).summary(x)
    except UsageError as exc:
        return {"method": METHOD, "error": str(exc)}
    except Exception as exc:  # shap/numba failures must not fail a training
        return {"method": METHOD, "error": f"{type(exc).__name__}: {exc}"}


def row_as_of(frame: Any, as_of: str | None) -> tuple[np.ndarray, str]:
    """The newest usable row of ``frame`` on or before ``as_of`` (default: the last)."""
    import pandas as pd

    rows = frame[pd.DatetimeIndex(frame.index) <= pd.Timestamp(as_of)] if as_of else frame
    if rows.empty:
        raise UsageError(f"no usable bar on or before {as_of}: the data start "
                         f"{pd.DatetimeIndex(frame.index)[0].date()}")
    return rows.iloc[-1:].to_numpy(dtype=float), str(pd.DatetimeIndex(rows.index)[-1].date())


def explain_active(bundle: dict[str, Any], bars: Any, as_of: str | None = None
                   ) -> Explanation:
    """The verified active bundle's regime for one day of ``bars``, explained."""
    from quantshift_ml.model.features import model_frame, usable
    from quantshift_ml.training.model import regime_model

    features = list(bundle["features"])
    frame = model_frame(bars, bundle.get("labeler"))[features]
    x, day = row_as_of(frame[usable(frame)], as_of)
    return Explainer(regime_model(bundle)).explain(x, [day])[0]


class ServedExplainer:
    """``/regime?explain=1``: the served version's forest, loaded on the first request
    that asks for an explanation, after its signature and sha256 check out.

    The service itself answers from the signed ONNX model and never unpickles on
    its ordinary path; an explanation needs the scikit-learn trees, so this loads
    the verified pickle once per served version (``store.load_model`` verifies
    before unpickling) and refuses to explain a model other than the one served.
    """

    def __init__(self, store: Any) -> None:
        import threading

        self.store = store
        self._lock = threading.Lock()
        self._sha: str | None = None
        self._explainer: Explainer | None = None
        self._error: str | None = None

    def _for(self, meta: dict[str, Any]) -> Explainer:
        """The served version's explainer; a failure is kept for that version too, so a
        model that cannot be explained is not re-read and unpickled on every request."""
        from quantshift_ml.errors import IntegrityError
        from quantshift_ml.training.model import regime_model

        sha = meta.get("sha256")
        with self._lock:
            if self._sha != sha:
                self._explainer, self._error = None, None
                try:
                    bundle, art = self.store.load_model(self.store.layout.active_pkl)
                    if art.sha256 != sha:  # not kept: the service reloads soon
                        raise IntegrityError("the active model changed since the service "
                                             "loaded it; no explanation until it reloads")
                    self._explainer = Explainer(regime_model(bundle))
                except UsageError as exc:
                    self._error = str(exc)
                self._sha = sha
            if self._explainer is None:
                raise UsageError(self._error or "no explainer")
            return self._explainer

    def explain(self, meta: dict[str, Any], x: np.ndarray, day: str) -> dict[str, Any]:
        """The explanation of row ``x`` (or ``{"error": ...}`` when there can be none)."""
        from quantshift_ml.errors import QuantshiftError

        try:
            return self._for(meta).explain(x, [day])[0].as_dict()
        except QuantshiftError as exc:  # the answer itself is still served
            return {"error": str(exc)}
