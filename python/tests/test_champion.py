"""The champion policy (issue 25): margin, ties to the simpler family, a record of
settled labels as known at the decision, and the walk-forward's champion row."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from quantshift_ml.champion import policy as ch
from quantshift_ml.cli.dispatch import main
from quantshift_ml.training.gate import gate_for
from quantshift_ml.walkforward.monthly import ChampionPolicy, run_walkforward

from .conftest import FAST


def test_the_incumbent_stays_within_the_margin_and_a_switch_goes_to_the_simplest() -> None:
    scores = {"forest": 0.80, "hmm_range_filter": 0.81, "hmm_filter": 0.70}
    assert ch.choose(scores, "forest", margin=0.02) == "forest"  # 0.01 behind: stays
    assert ch.choose(scores, "forest", margin=0.005) == "hmm_range_filter"
    # a near-tie goes to the simpler family, the incumbent only keeps its place
    near = {"forest": 0.85, "hmm_range_filter": 0.845, "hmm_filter": 0.70}
    assert ch.choose(near, "hmm_filter", margin=0.01) == "hmm_range_filter"
    assert ch.choose({}, "forest", margin=0.0) == "forest"  # no record: no decision
    # an incumbent outside the field gives way to the simplest within the margin
    assert ch.choose({"hmm_filter": 0.8, "hmm_range_filter": 0.805}, "forest",
                     margin=0.01) == "hmm_filter"


def _months(n_months: int, rows: int, horizon: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    pos = np.arange(n_months * rows)
    month = pos // rows
    known_end = [k * rows - 1 - horizon for k in range(n_months)]
    return pos, month, known_end


def test_the_record_reads_only_labels_settled_before_the_cut_off() -> None:
    """A family right only on the rows whose label had not settled at the cut-off (the
    last ``horizon`` bars before it) gains nothing from them on that cut-off's record."""
    pos, month, known_end = _months(8, 30, horizon=20)
    truth = np.array(["Bull", "Bear"] * (len(pos) // 2), dtype=object)
    wrong = np.where(truth == "Bull", "Bear", "Bull").astype(object)
    known = [ch.encode(truth[: max(end + 1, 0)]) for end in known_end]
    rows = ch.Months(pos=pos, month=month, known_end=known_end, known=known)
    for k in range(3, 8):
        lucky = wrong.copy()
        late = (month < k) & (pos > known_end[k])  # earlier months, not settled at k
        assert late.sum() == 20
        lucky[late] = truth[late]
        scores, n = ch.record_scores(rows, {"forest": truth, "hmm_filter": lucky}, k, None,
                                     min_rows=60)
        assert n == known_end[k] + 1 and scores == {"forest": 1.0, "hmm_filter": 0.0}
    row, chosen = ch.evaluate(rows, {"forest": wrong, "hmm_filter": truth},
                              record_months=None, margin=0.0, min_rows=60)
    first = next(k for k in range(8) if known_end[k] + 1 >= 60)
    assert chosen == ["forest"] * first + ["hmm_filter"] * (8 - first)
    assert list(row[month >= first]) == list(truth[month >= first])


def test_the_forest_serves_until_a_record_exists_then_the_better_family_takes_over() -> None:
    pos, month, known_end = _months(20, 21, horizon=20)
    truth = np.array(["Bull", "High Vol", "Bear"] * (len(pos) // 3), dtype=object)
    known = [ch.encode(truth[: max(e + 1, 0)]) for e in known_end]
    good, bad = truth.copy(), np.full(len(pos), "Bull", dtype=object)
    rows = ch.Months(pos=pos, month=month, known_end=known_end, known=known)
    _, chosen = ch.evaluate(rows, {"forest": bad, "hmm_range_filter": good},
                            record_months=None, margin=0.02)
    first_record = next(k for k in range(20) if known_end[k] + 1 >= ch.MIN_RECORD_ROWS)
    assert chosen[:first_record] == ["forest"] * first_record
    assert set(chosen[first_record:]) == {"hmm_range_filter"}
    assert ch.summary(chosen, ["hmm_range_filter", "forest"])["switches"] == 1


@pytest.fixture(scope="module")
def short_report(bars: pd.DataFrame) -> dict:
    return run_walkforward(bars, FAST, gate_for("hmm"), start="2017-07-01")


def test_the_walkforward_reports_the_champion_row_like_every_other(short_report: dict) -> None:
    rep = short_report
    champ = rep["champion"]
    policy = champ["policy"]
    assert policy["families"] == ["hmm_filter", "hmm_range_filter", "forest"]
    assert policy["record_months"] == "expanding" and policy["switch_margin"] == ch.SWITCH_MARGIN
    assert len(policy["chosen"]) == rep["months"] == len(rep["windows"])
    assert sum(policy["share_of_months"].values()) == pytest.approx(1.0, abs=1e-3)
    assert "champion" not in rep["baselines"] and rep["strongest_baseline"]["name"] != "champion"
    for table in (rep["economics"], rep["outcomes"]["predictors"], *rep["per_year"].values(),
                  *rep["halves"].values(), *rep["stress_periods"].values()):
        assert "champion" in table
    assert champ["n"] == rep["model"]["n"]
    vs = champ["vs_strongest"]
    assert vs["ci95"][0] <= vs["margin"] <= vs["ci95"][1]
    assert set(champ["vs_family"]) == set(policy["families"])
    assert all("champion_vs_strongest" in h for h in rep["halves"].values())
    json.dumps(rep)


def test_a_field_of_one_family_is_that_family(bars: pd.DataFrame, short_report: dict) -> None:
    rep = run_walkforward(bars, FAST, gate_for("hmm"), start="2018-05-01",
                          policy=ChampionPolicy(families=("forest",)))
    assert rep["champion"]["balanced_accuracy"] == rep["model"]["balanced_accuracy"]
    assert rep["champion"]["policy"]["switches"] == 0


@pytest.mark.parametrize(("argv", "message"), [
    (["--families", "forest,garch"], "unknown family 'garch'"),
    (["--families", ","], "at least one family"),
    (["--record-months", "-1"], "--record-months must be 0"),
    (["--switch-margin", "1.5"], "--switch-margin must be within 0..1"),
    (["--labeler", "rules", "--families", "hmm_filter"], "the filters need the hmm labeler"),
])
def test_walkforward_refuses_a_bad_champion_policy(argv: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walkforward", "--source", "bundled", *argv, "--json"]) == 2
    assert message in json.loads(capsys.readouterr().out)["error"]


def test_a_field_the_labeler_cannot_run_is_refused(bars: pd.DataFrame) -> None:
    from quantshift_ml.errors import UsageError

    rules = FAST.__class__(labeler="rules", model=FAST.model, cv_folds=3)
    with pytest.raises(UsageError, match="none of them can run with the 'rules' labeler"):
        run_walkforward(bars, rules, gate_for("rules"), start="2018-09-01",
                        policy=ChampionPolicy(families=("hmm_filter",)))
