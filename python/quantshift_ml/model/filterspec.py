"""A filter family's servable form: a JSON spec evaluated from the bars alone.

The causal HMM filters (``hmm_filter``, ``hmm_range_filter``) compete with the
forest as families (issue 25). A filter champion must be servable and
verifiable without a pickle and without scikit-learn, so what it learned is a
handful of numbers: the HMM's parameters (state means and variances of daily
log returns in percent, transition matrix, start probabilities), for the range
filter each state's law of ``log_range``, the cut-off on P(turbulent) tuned on
the training rows, and the trend rule that composes calm / turbulent with
today's drawdown, slope and distance to the 200-day average into the five
regimes. This module validates such a spec and evaluates it with the very
functions the baselines and the ``hmm_filter`` input use (``hmm.filtered``,
``hmm.range_filtered``, ``RegimeRule``), so the served answer is the one the
walk-forward scored. It imports numpy, pandas and the package's own modules,
never scikit-learn or hmmlearn.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml import defaults
from quantshift_ml.errors import IntegrityError
from quantshift_ml.model import hmm
from quantshift_ml.model.regimes import FILTER_INPUTS, FILTER_P, REGIMES, RULE_FEATURES, RegimeRule

FILTER_FAMILIES: tuple[str, ...] = defaults.FILTER_FAMILIES
SPEC_FORMAT = 1
"""Bumped when a spec's meaning changes; an unknown format is refused, not guessed."""
INPUTS: tuple[str, ...] = FILTER_INPUTS
"""A filter release's inputs, in order: what its bundle's ``features`` and its
metadata's ``serving.features`` name (the market cache computes ``FILTER_P``)."""


@dataclass(frozen=True)
class FilterSpec:
    """A validated filter spec (``from_dict``); ``to_dict`` is its JSON form."""

    family: str
    params: hmm.HmmParams
    law: hmm.RangeLaw | None
    cutoff: float
    rule: RegimeRule

    def to_dict(self) -> dict[str, Any]:
        law = None if self.law is None else {"means": list(self.law.means),
                                             "variances": list(self.law.variances)}
        hmm_params = json.loads(json.dumps(self.params.to_dict()))  # tuples as JSON lists
        return {"family": self.family, "format": SPEC_FORMAT, "hmm": hmm_params,
                "range_law": law, "cutoff": self.cutoff, "rule": self.rule.params(),
                "inputs": ["Close"] + (["High", "Low"] if law else []) + list(RULE_FEATURES)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "spec") -> FilterSpec:
        """Refuse anything that is not a complete, finite spec of a known format."""
        try:
            if d.get("format") != SPEC_FORMAT:
                raise ValueError(f"format {d.get('format')!r}, this release reads "
                                 f"{SPEC_FORMAT}")
            family = str(d["family"])
            if family not in FILTER_FAMILIES:
                raise ValueError(f"family {family!r} is not a filter family "
                                 f"({', '.join(FILTER_FAMILIES)})")
            params = hmm.HmmParams.from_dict(d["hmm"])
            raw = d.get("range_law")
            law = None if raw is None else hmm.RangeLaw(
                means=(float(raw["means"][0]), float(raw["means"][1])),
                variances=(float(raw["variances"][0]), float(raw["variances"][1])))
            if (family == "hmm_range_filter") != (law is not None):
                raise ValueError("a range law belongs to hmm_range_filter and only to it")
            spec = cls(family=family, params=params, law=law, cutoff=float(d["cutoff"]),
                       rule=RegimeRule(**d["rule"]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise IntegrityError(f"{where}: not a valid filter spec: {exc}") from exc
        _check_numbers(spec, where)
        return spec


def _check_numbers(spec: FilterSpec, where: str) -> None:
    p = spec.params
    numbers = [*p.startprob, *p.transmat[0], *p.transmat[1], *p.means, *p.variances,
               spec.cutoff, spec.rule.crisis_drawdown, spec.rule.trend_slope]
    if spec.law is not None:
        numbers += [*spec.law.means, *spec.law.variances]
    variances = [*p.variances, *(spec.law.variances if spec.law else ())]
    rows = [p.startprob, *p.transmat]
    if not all(math.isfinite(v) for v in numbers):
        raise IntegrityError(f"{where}: filter spec holds a non-finite number")
    if min(variances) <= 0 or not 0.0 <= spec.cutoff <= 1.0:
        raise IntegrityError(f"{where}: filter spec needs positive variances and a "
                             "cut-off within 0..1")
    if any(min(r) < 0 or abs(sum(r) - 1.0) > 1e-6 for r in rows):
        raise IntegrityError(f"{where}: filter spec's start and transition probabilities "
                             "must be non-negative and sum to 1")


def p_turbulent(spec: FilterSpec, bars: pd.DataFrame) -> np.ndarray:
    """P(turbulent | bars up to t) for every bar (NaN for the first, which has no return)."""
    r = hmm.returns_pct(bars["Close"])[1:]
    p = np.full(len(bars), np.nan)
    if spec.law is None:
        p[1:] = hmm.filtered(spec.params, r)
    else:
        p[1:] = hmm.range_filtered(spec.params, spec.law, r, hmm.log_range(bars)[1:])
    return p


def with_column(spec: FilterSpec, bars: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """``features`` plus ``FILTER_P``: the filter run over every bar, aligned by date
    (the same start as at training, so the answer for a bar does not depend on how
    much later history the caller holds)."""
    p = pd.Series(p_turbulent(spec, bars), index=bars.index)
    return features.assign(**{FILTER_P: p.reindex(features.index).to_numpy()})


def compose_row(spec: FilterSpec, row: tuple[float, ...]) -> tuple[str, dict[str, float]]:
    """Regime and per-regime probabilities of one row in ``INPUTS`` order (plain Python:
    the service's one-row path)."""
    p, drawdown, slope, vs200 = row
    regime = spec.rule.compose_one(p > spec.cutoff, drawdown, slope, vs200)
    return regime, probabilities(regime, p, spec, dict(zip(RULE_FEATURES, row[1:],
                                                           strict=True)))


class FilterModel:
    """A filter spec with the estimator-like face the bundle's readers use
    (``features``, ``classes_``, ``predict``, ``predict_proba`` on rows in ``INPUTS``
    order): ``predict``, ``evaluate`` and the gate's incumbent check read every
    family's bundle alike. Holds only the spec's JSON form, so what a pickle of it
    carries is the signed spec's numbers and nothing else."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec_dict = json.loads(json.dumps(dict(spec)))
        self.features = list(INPUTS)
        self.classes_ = np.asarray(REGIMES, dtype=object)

    @property
    def spec(self) -> FilterSpec:
        return FilterSpec.from_dict(self.spec_dict, "bundle")

    def predict(self, x: np.ndarray) -> np.ndarray:
        spec = self.spec
        return np.asarray([compose_row(spec, tuple(float(v) for v in r))[0]
                           for r in np.asarray(x, dtype=float)], dtype=object)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        spec = self.spec
        rows = [compose_row(spec, tuple(float(v) for v in r))[1]
                for r in np.asarray(x, dtype=float)]
        return np.asarray([[r[c] for c in REGIMES] for r in rows], dtype=float)


def regimes(spec: FilterSpec, p: np.ndarray, features: pd.DataFrame) -> np.ndarray:
    """The five regimes: P(turbulent) above the cut-off, composed with the trend rule."""
    return spec.rule.compose_frame(np.asarray(p, dtype=float) > spec.cutoff, features)


def probabilities(regime: str, p: float, spec: FilterSpec, row: Mapping[str, float]
                  ) -> dict[str, float]:
    """Per-regime probabilities of one bar: P(turbulent) on the turbulent regime the rule
    gives this bar, the rest on its calm one (the filter knows nothing else)."""
    args = [float(row[c]) for c in RULE_FEATURES]
    calm = spec.rule.compose_one(False, *args)
    turbulent = spec.rule.compose_one(True, *args)
    out = dict.fromkeys(REGIMES, 0.0)
    out[turbulent] += round(p, 4)
    out[calm] += round(1.0 - p, 4)
    assert regime in (calm, turbulent)
    return out


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return math.log(p / (1.0 - p))


def _log_normal(x: float, mean: float, var: float) -> float:
    return -0.5 * (x - mean) ** 2 / var - 0.5 * math.log(2.0 * math.pi * var)


def explain(spec: FilterSpec, bars: pd.DataFrame, features: pd.DataFrame) -> dict[str, Any]:
    """Why the filter called the newest bar what it did: Bayes' rule in log-odds.

    The forward filter's answer for day t is exact arithmetic, so it decomposes
    exactly: logit P(turbulent | up to t) = logit of yesterday's probability
    carried one step by the transition matrix (the prior) + the log likelihood
    ratio of today's return under the turbulent and the calm state + (range
    filter) that of today's high-low range. Then the cut-off decides calm or
    turbulent and the trend rule names the regime from the three rule features,
    all shown. The operator's counterpart of the forest's SHAP values.
    """
    if len(bars) < 2:
        raise IntegrityError("explaining a filter needs at least two bars")
    p = p_turbulent(spec, bars)
    (_, p01), (_, p11) = spec.params.transmat
    # the first return's prior is the start probability (bar 0 has no return)
    prior = (float(spec.params.startprob[1]) if len(bars) == 2
             else (1.0 - float(p[-2])) * p01 + float(p[-2]) * p11)
    r = float(hmm.returns_pct(bars["Close"])[-1])
    mu, var = spec.params.means, spec.params.variances
    terms = [{"input": "return_pct", "value": round(r, 4),
              "log_likelihood_ratio": round(_log_normal(r, mu[1], var[1])
                                            - _log_normal(r, mu[0], var[0]), 4)}]
    if spec.law is not None:
        lr = float(hmm.log_range(bars)[-1])
        llr = 0.0 if not math.isfinite(lr) else (
            _log_normal(lr, spec.law.means[1], spec.law.variances[1])
            - _log_normal(lr, spec.law.means[0], spec.law.variances[0]))
        terms.append({"input": "log_range", "value": round(lr, 4) if math.isfinite(lr)
                      else None, "log_likelihood_ratio": round(llr, 4)})
    row = features.iloc[-1]
    regime = str(regimes(spec, p[-1:], features.iloc[-1:])[0])
    return {"family": spec.family, "date": str(pd.Timestamp(bars.index[-1]).date()),
            "regime": regime, "p_turbulent": round(float(p[-1]), 4),
            "prior_p_turbulent": round(prior, 4), "prior_log_odds": round(_logit(prior), 4),
            "terms": terms, "posterior_log_odds": round(_logit(float(p[-1])), 4),
            "cutoff": spec.cutoff, "turbulent": bool(p[-1] > spec.cutoff),
            "rule": {c: round(float(row[c]), 4) for c in RULE_FEATURES}}
