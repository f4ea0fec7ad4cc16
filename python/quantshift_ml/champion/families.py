"""Families of regime signal: every contender behind one small interface (issue 25).

Three rounds of model work ended with the forest level with the strongest
classic signal (docs/model.md), so the product lets the families compete rather
than tune one of them again. A family is fitted on a ``Dataset``'s training rows
(the same window, bars and five regimes for every family) and answers two
questions about any rows: which regime, with which P(turbulent), and what its
servable form is. The walk-forward, the record, the gate and the store read
families through this interface only.

``forest``
    today's model: the configured estimator (random forest, or the ensemble)
    on the features, composed into five regimes by ``RegimeModel`` (max rule
    with the HMM filter input, balanced decision rule); served as signed ONNX
    plus the metadata's ``serving`` section.
``hmm_filter`` / ``hmm_range_filter``
    the causal HMM filters that were baselines (``hmm_filter_tuned``,
    ``hmm_range_tuned``): the labeler's HMM fitted on the window, for the range
    filter each state's range law from the bars up to the newest training row,
    and a cut-off on P(turbulent) tuned on the training rows for five-regime
    balanced accuracy; served as a signed JSON spec (``filterspec``), with no
    pickle and no scikit-learn. Only for the ``hmm`` labeler (they need its HMM).

``RANK`` orders the families from the simplest: a tie goes to the simpler one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from quantshift_ml.errors import UsageError
from quantshift_ml.model import filterspec
from quantshift_ml.model.regimes import RegimeModel, serving_spec
from quantshift_ml.training import baselines as bl
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.fit import fit_estimator
from quantshift_ml.training.model import wrap
from quantshift_ml.training.pipeline import Dataset, _x, _xy

RANK: dict[str, int] = {"hmm_filter": 0, "hmm_range_filter": 1, "forest": 2}
"""Simplest first: fewer fitted numbers, nothing learned beyond the HMM and one cut."""


@dataclass(frozen=True)
class Signal:
    """A family's answer for some rows: five-regime names and P(turbulent)."""

    regimes: np.ndarray
    p_turbulent: np.ndarray


class Fitted(Protocol):
    """A family fitted on one training window."""

    @property
    def family(self) -> str: ...

    def predict(self, ds: Dataset, rows: np.ndarray) -> Signal: ...

    def spec(self) -> dict[str, Any]: ...


class Family(Protocol):
    name: str

    def fit(self, ds: Dataset, train: np.ndarray, config: TrainConfig, *, gap: int = 0
            ) -> Fitted: ...


@dataclass(frozen=True)
class FittedForest:
    model: RegimeModel
    family: str = "forest"

    def predict(self, ds: Dataset, rows: np.ndarray) -> Signal:
        x = _x(ds, rows)
        est = self.model.estimator.predict_proba(x)
        regimes, _ = self.model.finish(est, x)
        return Signal(np.asarray(regimes, dtype=object), self.model.p_turbulent(est))

    def spec(self) -> dict[str, Any]:

        return {"family": self.family, "serving": serving_spec(self.model,
                                                               list(self.model.classes_))}


class ForestFamily:
    """The configured estimator, composed as the pipeline composes it."""

    name = "forest"

    def fit(self, ds: Dataset, train: np.ndarray, config: TrainConfig, *, gap: int = 0
            ) -> FittedForest:
        x, y = _xy(ds, train)
        estimator, _ = fit_estimator(x, y, config, gap=gap)
        return FittedForest(wrap(estimator, ds.inputs, ds.labeler.rule,
                                 ds.labels.to_numpy()[train], combine=config.combine))


@dataclass(frozen=True)
class FittedFilter:
    filter: filterspec.FilterSpec

    @property
    def family(self) -> str:
        return self.filter.family

    def predict(self, ds: Dataset, rows: np.ndarray) -> Signal:
        p = filterspec.p_turbulent(self.filter, ds.bars)[rows]
        return Signal(filterspec.regimes(self.filter, p, ds.features.iloc[rows]), p)

    def spec(self) -> dict[str, Any]:
        return self.filter.to_dict()


class FilterFamily:
    """A causal HMM filter with a tuned cut-off (``hmm_filter`` or ``hmm_range_filter``)."""

    def __init__(self, name: str) -> None:
        if name not in filterspec.FILTER_FAMILIES:
            raise UsageError(f"{name!r} is not a filter family")
        self.name = name

    def fit(self, ds: Dataset, train: np.ndarray, config: TrainConfig, *, gap: int = 0
            ) -> FittedFilter:
        if ds.fitted is None or ds.labeler.rule is None:
            raise UsageError(f"family {self.name} needs the hmm labeler (its HMM and rule); "
                             f"this run uses {ds.labeler.name!r}")
        known = int(np.max(train))
        law = (bl.training_range_law(ds.bars, ds.fitted, known)
               if self.name == "hmm_range_filter" else None)
        draft = filterspec.FilterSpec(self.name, ds.fitted, law, 0.5, ds.labeler.rule)
        p = filterspec.p_turbulent(draft, ds.bars)
        inputs = bl.BaselineInputs(bars=ds.bars, features=ds.features,
                                   target=ds.target.to_numpy(), train=train, rows=train,
                                   labeler=ds.labeler, fitted=ds.fitted,
                                   labels=ds.labels.to_numpy())
        cut = bl.tuned_cutoff(inputs, p)
        return FittedFilter(filterspec.FilterSpec(self.name, ds.fitted, law, cut,
                                                  ds.labeler.rule))


def family(name: str) -> Family:
    """The family called ``name`` (UsageError naming the known ones otherwise)."""
    if name == "forest":
        return ForestFamily()
    if name in filterspec.FILTER_FAMILIES:
        return FilterFamily(name)
    raise UsageError(f"unknown family {name!r}: choose from {', '.join(sorted(RANK))}")


def available(ds: Dataset, names: list[str] | None = None) -> list[str]:
    """The families that can compete on ``ds`` (the filters need the hmm labeler),
    simplest first; ``names`` restricts them (each checked)."""
    for n in names or []:
        family(n)
    wanted = names or list(RANK)
    usable = [n for n in wanted if n == "forest" or ds.fitted is not None]
    return sorted(usable, key=RANK.__getitem__)
