"""Issue 28: ``walkforward --jobs N`` gives the report ``--jobs 1`` gives (but ``seconds``)."""

from __future__ import annotations

import pandas as pd

from quantshift_ml.training.gate import gate_for
from quantshift_ml.walkforward.monthly import run_walkforward

from .conftest import FAST


def test_two_processes_give_the_same_report_as_one(bars: pd.DataFrame) -> None:
    one = run_walkforward(bars, FAST, gate_for("hmm"), start="2018-05-01", jobs=1)
    two = run_walkforward(bars, FAST, gate_for("hmm"), start="2018-05-01", jobs=2)
    assert one["months"] >= 6
    one.pop("seconds"), two.pop("seconds")
    assert two == one


def test_jobs_below_one_is_a_usage_error(tmp_path, capsys) -> None:
    from quantshift_ml.cli.dispatch import main

    assert main(["walkforward", "--root", str(tmp_path), "--source", "bundled",
                 "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err
