"""The five regime names from a learned volatility state and a ruled trend.

The ``hmm`` labeler splits "the regime" into two axes because the evidence
(docs/model.md) says only one of them is learnable:

* **volatility state** (calm / turbulent), learned: the hindsight state of the
  regime HMM, which no causal feature contains. The forest predicts it.
* **trend and depth**, ruled: a documented causal rule on today's features,
  applied identically to the truth, the model and every baseline. Direction
  over the next weeks showed no skill beyond persistence in any design tried,
  so no model is asked to guess it.

The composition (``RegimeRule``, thresholds documented in docs/model.md):

=============  ====================================================================
turbulent      **Crisis** if the close is at least 20 % below its one-year high
               (``drawdown_252 <= -0.20``, a bear market by the usual definition);
               else **Bear** if the close is below its 200-day average
               (``close_vs_sma200 < 0``); else **High Vol**
calm           **Bull** if the close is above its 200-day average and the 50-day
               average rises (``close_vs_sma200 > 0`` and ``sma50_slope > 0``);
               else **Low Vol** (calm, no up-trend)
=============  ====================================================================

Bear sits on the turbulent side because falling markets are volatile ones (the
leverage effect): on the S&P 500 1999-2018 a calm day below a falling 200-day
average was 3.6 % of days, a regime too thin to mean anything to a bot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from quantshift_ml import REGIMES

if TYPE_CHECKING:
    import pandas as pd

CALM, TURBULENT = "calm", "turbulent"
STATES: tuple[str, str] = (CALM, TURBULENT)
"""The learned axis, in the order of a binary estimator's ``classes_``."""
TURBULENT_REGIMES: tuple[str, ...] = ("Crisis", "Bear", "High Vol")
RULE_FEATURES: tuple[str, str, str] = ("drawdown_252", "sma50_slope", "close_vs_sma200")
FILTER_P = "filter_p_turbulent"
"""The column a served filter family reads: its own P(turbulent) up to each bar."""
FILTER_INPUTS: tuple[str, ...] = (FILTER_P, *RULE_FEATURES)
"""A filter release's inputs, in order (``filterspec``; here so that the service
names them without importing pandas)."""
_COL = {name: REGIMES.index(name) for name in REGIMES}
PRIOR_FLOOR = 0.001
"""A regime absent from the training rows still weighs as if it were 0.1 % of them."""


@dataclass(frozen=True)
class RegimeRule:
    """Causal composition of a volatility state with today's trend (module docstring)."""

    crisis_drawdown: float = -0.20
    trend_slope: float = 0.0

    def compose(self, turbulent: np.ndarray, drawdown: np.ndarray, slope: np.ndarray,
                vs200: np.ndarray) -> np.ndarray:
        """Regime names for boolean ``turbulent`` and the three rule features (1-D arrays)."""
        turb = np.asarray(turbulent, dtype=bool)
        out = np.full(turb.shape, "Low Vol", dtype=object)
        out[~turb & (vs200 > 0) & (slope > self.trend_slope)] = "Bull"
        out[turb] = "High Vol"
        out[turb & (vs200 < 0)] = "Bear"
        out[turb & (drawdown <= self.crisis_drawdown)] = "Crisis"
        return out

    def compose_one(self, turbulent: bool, drawdown: float, slope: float, vs200: float) -> str:
        """``compose`` for one row in plain Python (the service's one-row path, no numpy)."""
        if not turbulent:
            return "Bull" if vs200 > 0 and slope > self.trend_slope else "Low Vol"
        if drawdown <= self.crisis_drawdown:
            return "Crisis"
        return "Bear" if vs200 < 0 else "High Vol"

    def compose_frame(self, turbulent: np.ndarray, features: pd.DataFrame) -> np.ndarray:
        """``compose`` with the rule features taken from a feature frame by name."""
        cols = [features[c].to_numpy(dtype=float) for c in RULE_FEATURES]
        return self.compose(turbulent, *cols)

    def states(self, regimes: np.ndarray) -> np.ndarray:
        """The volatility state of regime names (Crisis, Bear and High Vol are turbulent).

        Applied to another labeler's regimes (the old rule's), Bear there is a
        trend, not a volatility, so only its Crisis and High Vol map to turbulent:
        use ``from_volatility`` for those.
        """
        names = np.asarray([str(v) for v in regimes], dtype=object)
        return np.where(np.isin(names, TURBULENT_REGIMES), TURBULENT, CALM).astype(object)

    @staticmethod
    def from_volatility(regimes: np.ndarray) -> np.ndarray:
        """calm/turbulent of regimes whose Crisis and High Vol are the volatile ones."""
        names = np.asarray([str(v) for v in regimes], dtype=object)
        return np.where(np.isin(names, ["Crisis", "High Vol"]), TURBULENT, CALM).astype(object)

    def params(self) -> dict[str, Any]:
        return asdict(self)


def regime_shares(labels: np.ndarray) -> dict[str, float]:
    """Each regime's share of ``labels`` (the priors of ``balanced_cutoff``)."""
    names = np.asarray([str(v) for v in labels], dtype=object)
    return {c: round(float(np.mean(names == c)), 6) for c in REGIMES} if len(names) else {}


def balanced_cutoff(priors: dict[str, float], calm: str, turbulent: str) -> float:
    """P(turbulent) above which ``turbulent`` beats ``calm`` for balanced accuracy.

    Predicting class c where ``P(c) / prior(c)`` is largest maximises the mean
    recall over classes; with two candidates that is ``p > pt / (pt + pc)``.
    """
    pt = max(priors.get(turbulent, 0.0), PRIOR_FLOOR)
    pc = max(priors.get(calm, 0.0), PRIOR_FLOOR)
    return pt / (pt + pc)


def round6(value: float) -> float:
    """``float(np.round(value, 6))`` in plain Python, bit for bit: numpy multiplies by
    1e6, rounds half to even (``rint``) and divides, which is what this does
    (``round`` of a float is half-to-even; the int fits a double exactly at these
    magnitudes). A tenth of the cost of numpy's call on a scalar."""
    scaled = value * 1e6
    if scaled != scaled or scaled in (float("inf"), float("-inf")):
        return value * 1.0  # NaN and infinities pass through, as in numpy
    return float(round(scaled)) / 1e6


def regime_codes(names: np.ndarray) -> np.ndarray:
    """Each regime name's column in ``REGIMES``."""
    return np.fromiter((_COL[c] for c in names), dtype=int, count=len(names))


def cutoff_table(cutoff: Callable[[str, str], float]) -> np.ndarray:
    """``cutoff(calm, turbulent)`` for all 5 x 5 pairs of regimes, indexed by
    ``regime_codes``: a day's cut-off is a lookup, not one call per row."""
    return np.asarray([[cutoff(c, t) for t in REGIMES] for c in REGIMES])


class RegimeModel:
    """A fitted estimator plus the step that turns its outputs into regimes.

    Without a rule the estimator predicts the regimes itself (``rules`` and
    ``forward`` labelers) and this class only forwards. With a rule the estimator
    predicts calm/turbulent and ``finish`` composes the five regimes, so the
    scikit-learn and the ONNX paths share one composition (the service runs the
    estimator in onnxruntime, then ``finish`` in numpy).

    ``predict_proba`` puts P(turbulent) on the one of Crisis / Bear / High Vol and
    P(calm) on the one of Bull / Low Vol that the rule picks: the others get 0.

    ``threshold``: a day is turbulent when P(turbulent) exceeds it (models trained
    before ``priors`` existed; ``priors`` takes precedence).

    ``priors``: each regime's share of the training rows. The rule leaves two
    candidate regimes per day (the calm one and the turbulent one), and the day
    is turbulent when ``p / prior(turbulent regime) > (1 - p) / prior(calm
    regime)``: the decision that maximises the mean recall over the five regimes
    (the gate's balanced accuracy) for calibrated probabilities, so a rare regime
    (Crisis, High Vol) needs less evidence than Bull. Chosen from training rows
    only, never from a holdout.

    ``counterpart``: name of an input column holding the classic counterpart's
    P(turbulent) (``hmm_filter``). When set, P(turbulent) is the larger of the
    estimator's and the counterpart's: turbulent when either says so
    (docs/model.md, "the model"), because labels known at training time
    understate the turbulence that the final hindsight state shows.
    """

    def __init__(self, estimator: Any, features: list[str], rule: RegimeRule | None = None,
                 threshold: float = 0.5, priors: dict[str, float] | None = None,
                 counterpart: str | None = None) -> None:
        self.estimator = estimator
        self.features = list(features)
        self.rule = rule
        self.threshold = threshold
        self.priors = dict(priors) if priors else None
        self.counterpart = counterpart
        self._rule_cols = [self.features.index(c) for c in RULE_FEATURES] if rule else []

    @property
    def classes_(self) -> np.ndarray:
        if self.rule is None:
            return np.asarray(self.estimator.classes_, dtype=object)
        return np.asarray(REGIMES, dtype=object)

    @property
    def feature_importances_(self) -> np.ndarray:
        return np.asarray(getattr(self.estimator, "feature_importances_", np.zeros(
            len(self.features))), dtype=float)

    def p_turbulent(self, estimator_proba: np.ndarray) -> np.ndarray:
        classes = [str(c) for c in self.estimator.classes_]
        if TURBULENT not in classes:  # trained on calm rows only
            return np.zeros(len(estimator_proba))
        return np.asarray(estimator_proba, dtype=float)[:, classes.index(TURBULENT)]

    def _combined(self, p: np.ndarray, x: np.ndarray) -> np.ndarray:
        """P(turbulent) after the counterpart (if any), rounded so that float32 (ONNX)
        and float64 (scikit-learn) agree on a tie: an even number of trees can vote 0.5."""
        counterpart = self.__dict__.get("counterpart")  # None in bundles from before it
        if counterpart is not None:
            p = np.fmax(p, x[:, self.features.index(counterpart)])  # NaN filter: the forest
        return np.round(p, 6)

    def cutoff(self, calm: str, turbulent: str) -> float:
        """The P(turbulent) above which a day whose rule gives these two regimes is
        turbulent (see the class docstring)."""
        priors = self.__dict__.get("priors")  # None in bundles pickled before priors
        return balanced_cutoff(priors, calm, turbulent) if priors else float(self.threshold)

    def finish(self, estimator_proba: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and class probabilities (columns ``classes_``) from the estimator's output."""
        proba = np.asarray(estimator_proba, dtype=float)
        if self.rule is None:
            classes = self.classes_
            return classes[np.argmax(np.round(proba, 6), axis=1)], proba
        x = np.asarray(x, dtype=float)
        p = self._combined(self.p_turbulent(proba), x)
        cols = [x[:, i] for i in self._rule_cols]
        calm_label = self.rule.compose(np.zeros(len(p), bool), *cols)
        turb_label = self.rule.compose(np.ones(len(p), bool), *cols)
        ci, ti = regime_codes(calm_label), regime_codes(turb_label)
        labels = np.where(p > cutoff_table(self.cutoff)[ci, ti], turb_label,
                          calm_label).astype(object)
        out = np.zeros((len(p), len(REGIMES)))
        rows = np.arange(len(p))
        out[rows, ci] += 1.0 - p
        out[rows, ti] += p
        return labels, out

    def decided_by(self, estimator_proba: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Per row, which part's P(turbulent) the max rule served: ``"forest"`` or the
        counterpart's name (where it is strictly larger and not NaN)."""
        p = self.p_turbulent(np.asarray(estimator_proba, dtype=float))
        counterpart = self.__dict__.get("counterpart")
        out = np.full(len(p), "forest", dtype=object)
        if self.rule is None or counterpart is None:
            return out
        out[self._combined(p, np.asarray(x, dtype=float)) > np.round(p, 6)] = counterpart
        return out

    def finish_one(self, estimator_row: Sequence[float] | np.ndarray,
                   x_row: Sequence[float] | np.ndarray) -> tuple[str, list[float]]:
        """``finish`` of one row without array operations: the same label and probabilities.

        numpy's per-call overhead made the composition cost ten times the ONNX
        inference itself on one row; the service answers one row at a time.
        """
        if self.rule is None:
            rounded = [round6(float(v)) for v in estimator_row]
            return str(self.classes_[rounded.index(max(rounded))]), [float(v)
                                                                     for v in estimator_row]
        col = self.__dict__.get("_turb_col")
        if col is None:  # cached on first use (bundles unpickled from older releases too)
            classes = [str(c) for c in self.estimator.classes_]
            col = self.__dict__["_turb_col"] = (classes.index(TURBULENT)
                                                if TURBULENT in classes else -1)
        p = float(estimator_row[col]) if col >= 0 else 0.0
        other = self.__dict__.get("_counterpart_col")
        if other is None:  # cached on first use, like the column above (-1: none)
            counterpart = self.__dict__.get("counterpart")
            other = self.__dict__["_counterpart_col"] = (
                self.features.index(counterpart) if counterpart is not None else -1)
        if other >= 0 and x_row[other] == x_row[other]:  # NaN filter: the forest alone
            p = max(p, float(x_row[other]))
        p = round6(p)
        d, s, v = (float(x_row[i]) for i in self._rule_cols)
        calm, turb = self.rule.compose_one(False, d, s, v), self.rule.compose_one(True, d, s, v)
        out = [0.0] * len(REGIMES)
        out[_COL[calm]] += 1.0 - p
        out[_COL[turb]] += p
        cutoffs = self.__dict__.setdefault("_cutoffs", {})  # per (calm, turbulent) pair
        cut = cutoffs.get((calm, turb))
        if cut is None:
            cut = cutoffs[(calm, turb)] = self.cutoff(calm, turb)
        return (turb if p > cut else calm), out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.finish(self.estimator.predict_proba(x), x)[1]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.finish(self.estimator.predict_proba(x), x)[0]


def serving_spec(model: RegimeModel, classes: list[str]) -> dict[str, Any]:
    """What the service needs besides the ONNX file, recorded (and signed) at training."""
    return {"features": list(model.features), "classes": [str(c) for c in classes],
            "estimator_classes": [str(c) for c in model.estimator.classes_],
            "rule": model.rule.params() if model.rule is not None else None,
            "threshold": float(model.threshold),
            "priors": model.__dict__.get("priors"),
            "counterpart": model.__dict__.get("counterpart")}


def regime_model(bundle: dict[str, Any]) -> RegimeModel:
    """The bundle's RegimeModel; a format-1 bundle's bare forest is wrapped on the fly."""
    model = bundle["model"]
    if isinstance(model, RegimeModel):
        return model
    return RegimeModel(model, list(bundle["features"]))
