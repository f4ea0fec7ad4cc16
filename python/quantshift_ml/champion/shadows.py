"""The challengers a release carries: every other filter family, fitted on the same rows.

The record at training scores every family out of time before the holdout; after
deployment the question is the same on bars the families have never seen. So a
release carries, beside its champion, the signed spec of each other filter family
of the field (``metadata.shadows``: family -> spec), fitted on the champion's
training rows exactly as the contest fits a filter champion. The service evaluates
them off the request path and logs their answers beside the served one
(``serving.service.shadows``, the prediction log's ``shadows`` table);
``monitoring.live_record`` scores them as the bars settle.

Only filter families shadow: a spec is a few numbers evaluated with the code the
service already runs. The forest shadows nothing when a filter is champion: that
would ship a second ONNX model in every release, and the forest's live record then
starts when it is champion again (docs/model.md says so).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quantshift_ml.champion.families import FittedFilter, available, family
from quantshift_ml.model.filterspec import FILTER_FAMILIES
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.pipeline import Dataset, Split


def fit_shadows(ds: Dataset, split: Split, config: TrainConfig, champion: str
                ) -> dict[str, dict[str, Any]]:
    """family -> signed-to-be spec of every filter family of the field but the champion."""
    rows = np.concatenate([split.stress, split.train])
    out: dict[str, dict[str, Any]] = {}
    for name in available(ds, list(config.families)):
        if name == champion or name not in FILTER_FAMILIES:
            continue
        fitted = family(name).fit(ds, rows, config, gap=split.gap)
        assert isinstance(fitted, FittedFilter)
        out[name] = fitted.spec()
    return out
