"""Live accuracy that requests cannot game (issue 12 item 9): the prediction log's samples.

One sample per (symbol, bar, model version), the first one logged; only bars in the
monitor's data; per version. Scored with the ``rules`` labeler on the bundled data's
last 400 bars, whose labels are settled on the day, so no model has to be trained.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from quantshift_ml.data import BundledSource
from quantshift_ml.model.features import compute_features
from quantshift_ml.model.labels import make_labeler
from quantshift_ml.monitoring.monitor import live_accuracy, live_scores, score_live
from quantshift_ml.serving import predlog

RULES = {"name": "rules"}
OLD_SCHEMA = """
CREATE TABLE predictions (
    ts TEXT NOT NULL, symbol TEXT NOT NULL, bar_date TEXT NOT NULL, regime TEXT NOT NULL,
    probabilities TEXT NOT NULL, model_version TEXT NOT NULL)
"""
"""The table as the service created it before samples were deduplicated (no index)."""


@dataclass
class Bars:
    """The monitor's data: a fixed frame of bars."""

    frame: pd.DataFrame
    name: str = "test"
    loads: list[int] = field(default_factory=list)

    def load(self) -> pd.DataFrame:
        self.loads.append(1)
        return self.frame

    def describe(self) -> dict[str, str]:
        return {"source": self.name}


@pytest.fixture(scope="module")
def data() -> tuple[Bars, pd.Series]:
    frame = BundledSource().load().iloc[-400:]
    labels = make_labeler("rules").label(frame, compute_features(frame)).dropna()
    return Bars(frame), labels.iloc[-60:]


WRONG = {"Bull": "Bear", "Bear": "Bull", "High Vol": "Low Vol", "Low Vol": "Crisis",
         "Crisis": "Bull"}


def _log(root: Path, day: str, regime: str, version: str = "v1", symbol: str = "SPY",
         ts: str | None = None) -> None:
    predlog.append(root, predlog.Prediction(
        ts=ts or f"{day}T21:00:00+00:00", symbol=symbol, bar_date=day, regime=regime,
        probabilities={regime: 1.0}, model_version=version))


def test_30_requests_for_one_bar_are_one_sample(tmp_path: Path, data) -> None:
    bars, labels = data
    right = {str(d.date()): str(v) for d, v in labels.items()}
    for day, real in list(right.items())[:20]:  # 20 bars answered right, once each
        _log(tmp_path, day, real)
    last_day, last_real = list(right.items())[-1]
    for i in range(30):  # then one client asks 30 times about one bar and gets it wrong
        _log(tmp_path, last_day, WRONG[last_real], ts=f"{last_day}T21:00:{i:02d}+00:00")
    assert len(predlog.read(tmp_path)) == 50  # every request is still logged
    acc, n = live_accuracy(tmp_path, RULES, bars)
    assert (n, acc) == (21, pytest.approx(20 / 21))
    v1 = live_scores(tmp_path, RULES, bars)["v1"]
    assert (v1.samples, v1.hits, v1.requests) == (21, 20, 50)


def test_the_first_prediction_for_a_bar_is_its_sample(tmp_path: Path, data) -> None:
    bars, labels = data
    day, real = str(labels.index[-1].date()), str(labels.iloc[-1])
    _log(tmp_path, day, real, ts=f"{day}T14:30:00+00:00")  # same second: order of logging
    for _ in range(5):
        _log(tmp_path, day, WRONG[real], ts=f"{day}T14:30:00+00:00")
    _log(tmp_path, day, WRONG[real], ts=f"{day}T22:00:00+00:00")
    (sample,) = predlog.samples(tmp_path)
    assert sample.prediction.regime == real and sample.requests == 7
    assert live_accuracy(tmp_path, RULES, bars) == (1.0, 1)


def test_predictions_for_bars_not_in_the_data_are_not_samples(tmp_path: Path, data) -> None:
    bars, labels = data
    last = labels.index[-1]
    _log(tmp_path, "2018-12-29", "Bull")  # a Saturday: no such bar
    _log(tmp_path, "2019-01-15", "Bull")  # after the monitor's data ends
    _log(tmp_path, "2010-06-01", "Bull")  # before it starts
    _log(tmp_path, "31/12/2018", "Bull")  # not even a date
    assert live_accuracy(tmp_path, RULES, bars) == (None, 0)
    _log(tmp_path, str(last.date()), str(labels.iloc[-1]))
    v1 = live_scores(tmp_path, RULES, bars)["v1"]
    assert (v1.samples, v1.hits, v1.not_in_data, v1.pending) == (1, 1, 4, 0)


def test_each_version_has_its_own_count(tmp_path: Path, data) -> None:
    bars, labels = data
    for day, real in labels.items():
        _log(tmp_path, str(day.date()), WRONG[str(real)], version="bad")
        _log(tmp_path, str(day.date()), str(real), version="good")
    assert live_accuracy(tmp_path, RULES, bars, version="bad") == (0.0, 60)
    assert live_accuracy(tmp_path, RULES, bars, version="good") == (1.0, 60)
    assert live_accuracy(tmp_path, RULES, bars, version="never-served") == (None, 0)
    assert live_accuracy(tmp_path, RULES, bars) == (0.5, 120)  # pooled: each key once


def test_only_the_monitored_symbol_counts(tmp_path: Path, data) -> None:
    bars, labels = data
    day, real = str(labels.index[-1].date()), str(labels.iloc[-1])
    _log(tmp_path, day, real, symbol="SPY")
    _log(tmp_path, day, WRONG[real], symbol="QQQ")  # same bar, another instrument
    assert live_scores(tmp_path, RULES, bars, symbol="SPY")["v1"].samples == 1
    assert live_scores(tmp_path, RULES, bars, symbol="SPY")["v1"].hits == 1
    assert live_scores(tmp_path, RULES, bars)["v1"].samples == 2  # two keys without a filter


def test_score_live_counts_a_key_once_whatever_it_is_given() -> None:
    p = predlog.Prediction("2018-12-31T21:00:00+00:00", "SPY", "2018-12-31", "Bull",
                           {"Bull": 1.0}, "v1")
    wrong = predlog.Prediction("2018-12-31T22:00:00+00:00", "SPY", "2018-12-31", "Bear",
                               {"Bear": 1.0}, "v1")
    later = predlog.Prediction("2018-12-31T21:00:00+00:00", "SPY", "2018-12-28", "Bull",
                               {"Bull": 1.0}, "v1")
    scores = score_live([predlog.Sample(p, 1)] + [predlog.Sample(wrong, 1)] * 29
                        + [predlog.Sample(later, 3)],
                        {"2018-12-31": "Bull", "2018-12-28": None})
    assert scores["v1"].as_dict() == {"samples": 1, "hits": 1, "pending": 1, "not_in_data": 0,
                                      "requests": 4, "accuracy": 1.0}


def test_an_old_schema_database_is_migrated_without_losing_rows(tmp_path: Path, data) -> None:
    bars, labels = data
    day, real = str(labels.index[-1].date()), str(labels.iloc[-1])
    path = predlog.db_path(tmp_path)
    path.parent.mkdir(parents=True)
    rows = [(f"{day}T21:00:0{i}+00:00", "SPY", day, real if i == 0 else WRONG[real],
             "{}", "v1") for i in range(5)]
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_SCHEMA)
        conn.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.close()

    assert live_accuracy(tmp_path, RULES, bars) == (1.0, 1)  # read as it was
    _log(tmp_path, str(labels.index[-2].date()), str(labels.iloc[-2]))  # and appended to
    with sqlite3.connect(path) as conn:
        kept = conn.execute("SELECT ts, symbol, bar_date, regime, probabilities, model_version "
                            "FROM predictions ORDER BY rowid").fetchall()
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(predictions)")}
    conn.close()
    assert kept[:5] == rows and len(kept) == 6  # no row rewritten or dropped
    assert "predictions_by_sample" in indexes
    assert live_accuracy(tmp_path, RULES, bars) == (1.0, 2)


def test_no_log_reads_nothing(tmp_path: Path, data) -> None:
    bars = Bars(data[0].frame)
    assert predlog.samples(tmp_path) == [] and live_scores(tmp_path, RULES, bars) == {}
    assert bars.loads == []  # no market data fetched when there is nothing to score
    assert not predlog.db_path(tmp_path).exists()  # and no empty log created


def test_an_old_prediction_log_gains_the_shadows_table_and_keeps_its_rows(
        tmp_path: Path) -> None:
    """A database written before the live record: opening it adds the table, no row lost."""
    import sqlite3

    path = predlog.db_path(tmp_path)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:  # the oldest schema: no A/B columns, no shadows
        conn.execute("CREATE TABLE predictions (ts TEXT NOT NULL, symbol TEXT NOT NULL, "
                     "bar_date TEXT NOT NULL, regime TEXT NOT NULL, probabilities TEXT NOT "
                     "NULL, model_version TEXT NOT NULL)")
        conn.execute("INSERT INTO predictions VALUES ('2018-12-03T21:00:00+00:00', 'SPY', "
                     "'2018-12-03', 'Bull', '{\"Bull\": 1.0}', 'v1')")
    assert predlog.shadow_answers(tmp_path) == []
    assert [p.regime for p in predlog.read(tmp_path)] == ["Bull"]
    row = predlog.ShadowAnswer("t", "SPY", "2018-12-03", "hmm_filter", False, "Bear", "v1")
    assert predlog.append_shadows(tmp_path, [row, row]) == 1
    assert predlog.shadow_answers(tmp_path) == [row]


def test_a_batch_larger_than_one_insert_keeps_every_row_in_order(tmp_path: Path) -> None:
    """``append_many`` writes multi-row INSERTs of ``MAX_ROWS_PER_INSERT``: nothing lost."""
    n = predlog.MAX_ROWS_PER_INSERT * 2 + 3
    batch = [predlog.Prediction(ts=f"2018-12-03T21:00:{i // 100:02d}.{i:04d}+00:00",
                                symbol="SPY", bar_date="2018-12-03",
                                regime="Bull" if i % 2 else "Bear",
                                probabilities={"Bull": round(i / n, 4)}, model_version="v1",
                                client=f"bot-{i}")
             for i in range(n)]
    predlog.append_many(tmp_path, batch)
    assert predlog.read(tmp_path) == batch
