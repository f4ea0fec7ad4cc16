"""Issue 28: the service's one-row path without numpy gives today's answers exactly.

``RegimeService.regime`` now runs the row the market cache keeps in float32 and as
Python floats through ``Loaded.infer_row`` (probabilities only from onnxruntime,
``finish_one`` in plain Python, ``round6`` for numpy's rounding). The reference is
the array path every other command uses: ``OnnxPredictor.run`` on the float64 row
and ``RegimeModel.finish``, then the service's rounding to 4 places. Every usable
bundled bar is compared, for the hmm labeler (a rule and a counterpart) and for
rules (no rule: the forest names the regime).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from quantshift_ml.data import BundledSource
from quantshift_ml.model.features import model_frame, usable
from quantshift_ml.model.regimes import round6
from quantshift_ml.ops import operations
from quantshift_ml.serving.served import load_verified
from quantshift_ml.serving.service import RegimeService, Snapshot
from quantshift_ml.store import ModelStore
from quantshift_ml.training.gate import gate_for

from .conftest import FAST, OPEN


def _reference(loaded, x: np.ndarray) -> tuple[str, dict[str, float]]:
    labels, full = loaded.composer.finish(loaded.compiled.run(x)[1], x)
    return str(labels[0]), {c: round(float(p), 4) for c, p in zip(loaded.classes, full[0],
                                                                   strict=True)}


@pytest.mark.parametrize("labeler", ["hmm", "rules"])
def test_fast_path_equals_the_array_path_on_every_bundled_bar(
        bars, tmp_path: Path, labeler: str) -> None:
    gate = gate_for(labeler, {"beat_baseline": "none", "max_regression": 1.0, "floor": 0.0})
    operations.train(BundledSource(), root=tmp_path, config=replace(FAST, labeler=labeler),
                     gate=gate, promote=True)
    store = ModelStore(tmp_path)
    loaded = load_verified(store, store.layout.active_pkl)
    feats = model_frame(bars, loaded.meta.get("labeler"))
    frame = feats[usable(feats)][loaded.features]
    x_all = frame.to_numpy(dtype=float)
    assert len(x_all) > 4000  # every usable bar of 1999-2018
    mismatches = []
    for i in range(len(x_all)):
        x = np.ascontiguousarray(x_all[i:i + 1])
        snap = Snapshot(bar_date=str(frame.index[i].date()), x=x)
        fast = loaded.infer_row(snap.x32, snap.row)
        if fast != _reference(loaded, x) or fast != loaded.infer(x):
            mismatches.append((snap.bar_date, fast, _reference(loaded, x)))
    assert not mismatches, mismatches[:3]


def test_round6_is_numpys_rounding_bit_for_bit() -> None:
    rng = np.random.default_rng(28)
    values = np.concatenate([rng.random(200_000), np.arange(0, 1_000_001) / 1e6,
                             (np.arange(0, 200_001) + 0.5) / 1e6,  # ties at the 7th place
                             [0.0, -0.0, 1.0, 0.5, float("nan"), float("inf")]])
    expected = np.round(values, 6)
    got = np.array([round6(float(v)) for v in values])
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    assert same.all(), values[~same][:5]


def test_service_answer_is_the_reference_one(tmp_path: Path) -> None:
    """The whole in-process path (A/B arm, metrics, prediction log) on the newest bar."""
    operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    service = RegimeService(tmp_path, BundledSource(), "SPY")
    service.reload()
    try:
        code, body = service.regime("SPY", client="c")
        cur, _ = service.holder.get()
        assert cur is not None and code == 200
        snap = service.market.snapshot(cur.features, cur.fitted)
        assert (body["regime"], body["probabilities"]) == _reference(cur, snap.x)
        metrics = service.metrics.render().decode()
        assert f'quantshift_predictions_total{{regime="{body["regime"]}"}} 1.0' in metrics
        assert 'quantshift_ab_served_total{arm="ml"} 1.0' in metrics
    finally:
        service.predictions.close()
