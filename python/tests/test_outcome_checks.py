"""The monitor's live_outcomes check: the served answers judged on what the market did."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantshift_ml.data import BundledSource
from quantshift_ml.monitoring.checks import CRITICAL, OK, UNKNOWN, WARNING
from quantshift_ml.monitoring.monitor import Thresholds
from quantshift_ml.monitoring.outcome_checks import live_outcomes_check, scored
from quantshift_ml.outcomes import TURBULENT, forward_outcomes
from quantshift_ml.serving import predlog

META = {"version": "v1"}


@pytest.fixture(scope="module")
def truth() -> tuple[BundledSource, object]:
    src = BundledSource()
    return src, forward_outcomes(src.load()["Close"])


def _log(root: Path, days: object, regimes: list[str], version: str = "v1") -> None:
    for day, regime in zip(days, regimes, strict=True):
        d = str(day.date())  # type: ignore[attr-defined]
        for ts in ("T15:00:00+00:00", "T16:00:00+00:00"):  # two requests, one sample
            predlog.append(root, predlog.Prediction(d + ts, "SPY", d, regime, {regime: 1.0},
                                                    version))


def test_right_calls_are_ok_and_wrong_ones_critical(tmp_path: Path, truth: tuple) -> None:
    src, frame = truth
    days = frame.loc["2018-06-01":"2018-10-31"].index
    settled = frame.loc[days, "turbulent"]
    right = ["High Vol" if v == 1.0 else "Bull" for v in settled]
    _log(tmp_path / "a", days, right)
    ok = live_outcomes_check(tmp_path / "a", META, src, Thresholds())
    assert ok["status"] == OK and ok["value"] == 1.0, ok["message"]
    assert ok["outcomes"]["forward_vol"]["samples"] == len(days)
    wrong = ["Bull" if r in TURBULENT else "High Vol" for r in right]
    _log(tmp_path / "b", days, wrong)
    bad = live_outcomes_check(tmp_path / "b", META, src, Thresholds())
    assert bad["status"] == WARNING and bad["value"] == 0.0, bad["message"]  # never pages
    paging = live_outcomes_check(tmp_path / "b", META, src, Thresholds(live_vol_crit=0.1))
    assert paging["status"] == CRITICAL


def test_bars_whose_20_bars_have_not_passed_are_waiting(tmp_path: Path, truth: tuple) -> None:
    src, frame = truth
    days = frame.index[-25:]  # only the first 5 have settled by the end of the data
    _log(tmp_path, days, ["Bull"] * 25)
    rep = scored(tmp_path, "v1", src)
    assert rep["forward_vol"] == {**rep["forward_vol"], "samples": 5, "pending": 20}
    assert rep["economic"]["samples"] == 24  # the last bar has no next return yet
    check = live_outcomes_check(tmp_path, META, src, Thresholds())
    assert check["status"] == UNKNOWN and "20 waiting" in check["message"]


def test_money_lost_against_the_index_warns(tmp_path: Path, truth: tuple) -> None:
    """Flat in a rising stretch: right on volatility, behind the index: WARNING."""
    src, frame = truth
    days = frame.loc["2017-01-01":"2017-06-30"].index
    calm = frame.loc[days, "turbulent"] == 0.0
    calls = ["Bear" if c else "High Vol" for c in calm]  # flat when calm: a calm call missed
    _log(tmp_path, days, ["Low Vol" if c else "High Vol" for c in calm])
    assert live_outcomes_check(tmp_path, META, src, Thresholds())["status"] == OK
    _log(tmp_path, days, calls, version="v2")
    rep = live_outcomes_check(tmp_path, {"version": "v2"}, src,
                              Thresholds(live_vol_warn=0.0, live_vol_crit=0.0))
    assert rep["status"] == WARNING and rep["outcomes"]["economic"]["excess_return"] < 0


def test_gauges_per_outcome(tmp_path: Path, truth: tuple) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from quantshift_ml.monitoring.textfile import textfile

    src, frame = truth
    days = frame.loc["2018-06-01":"2018-07-31"].index
    _log(tmp_path, days, ["Bull"] * len(days))
    check = live_outcomes_check(tmp_path, META, src, Thresholds())
    prom = textfile({"host": "h", "status": check["status"], "checks": [check]})
    fam = next(f for f in text_string_to_metric_families(prom)
               if f.name == "quantshift_live_outcome")
    got = {(s.labels["outcome"], s.labels["figure"]): s.value for s in fam.samples}
    assert got[("forward_vol", "accuracy")] == check["value"]
    assert got[("economic", "return")] == check["outcomes"]["economic"]["return"]
