"""Issue 30, finding 7: progress of long work on stderr, on a terminal only.

The helper's stream and its is-a-terminal decision are injected (a StringIO that
says it is a terminal, or not); the CLI tests swap ``sys.stderr`` for one and
check that the walk-forward's JSON does not depend on whether anyone watches.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from quantshift_ml.cli.dispatch import main
from quantshift_ml.training import progress
from quantshift_ml.training.config import ModelParams, TrainConfig
from quantshift_ml.training.tuning import tune_forest


class Terminal(io.StringIO):
    """A stream that claims to be a terminal, as stderr is in an interactive shell."""

    def isatty(self) -> bool:
        return True


def _run_task(stream: io.StringIO, total: int = 4, **kw: object) -> str:
    """A task of ``total`` steps, ten seconds each on a clock the test moves."""
    now = [0.0]
    with progress.shown_on(stream, clock=lambda: now[0], **kw), \
            progress.task("walk-forward", total, "months") as shown:  # type: ignore[arg-type]
        for _ in range(total):
            now[0] += 10.0
            shown.advance()
    return stream.getvalue()


def test_a_terminal_gets_one_updating_line_with_count_elapsed_and_estimate() -> None:
    out = _run_task(Terminal())
    updates = out.split(progress.CLEAR_LINE)[1:]
    assert updates == [
        "walk-forward: 0/4 months, 0:00 elapsed, estimating",
        "walk-forward: 1/4 months, 0:10 elapsed, about 0:30 left",
        "walk-forward: 2/4 months, 0:20 elapsed, about 0:20 left",
        "walk-forward: 3/4 months, 0:30 elapsed, about 0:10 left",
        "walk-forward: 4/4 months, 0:40 elapsed",
        "walk-forward: 4/4 months, 0:40 elapsed\n",  # the block ends: a line of its own
    ]


def test_nothing_is_written_when_the_stream_is_no_terminal_or_quiet() -> None:
    assert _run_task(io.StringIO()) == ""  # isatty() is False: cron, Ansible, a pipe
    assert _run_task(Terminal(), tty=False) == ""  # the injected decision wins
    assert _run_task(Terminal(), quiet=True) == ""
    assert _run_task(io.StringIO(), tty=True).startswith(progress.CLEAR_LINE)


def test_nested_tasks_show_the_outermost_only_and_no_display_costs_nothing() -> None:
    stream = Terminal()
    with progress.shown_on(stream, clock=lambda: 0.0):
        with progress.task("walk-forward", 2, "months") as outer:
            with progress.task("tuning", 8, "trials") as inner:
                inner.advance(8)
            outer.advance()
        with progress.task("tuning", 1, "trials") as after:  # the display is free again
            after.advance()
    assert "trials" not in stream.getvalue().split("\n")[0]
    assert "tuning: 1/1 trials" in stream.getvalue().split("\n")[1]
    with progress.task("tuning", 3, "trials") as alone:  # no display open: a no-op
        alone.advance(3)
    assert alone.done == 3


def test_clock_text() -> None:
    assert [progress.clock_text(s) for s in (0, 59.6, 83.4, 3725)] == [
        "0:00", "1:00", "1:23", "1:02:05"]


def test_tuning_reports_its_trials() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 3))
    y = np.where(x[:, 0] > 0, "Bull", "Bear").astype(object)
    config = TrainConfig(tune=True, tune_trials=3, model=ModelParams(n_estimators=5))
    stream = Terminal()
    with progress.shown_on(stream):
        quiet_params, _ = tune_forest(x, y, config, gap=5)
    assert "tuning: 3/3 trials" in stream.getvalue()
    assert tune_forest(x, y, config, gap=5)[0] == quiet_params  # watching changes nothing


WALKFORWARD = ["walkforward", "--source", "bundled", "--start", "2018-09-01",
               "--n-estimators", "10", "--json"]


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         stderr: io.StringIO, *args: str) -> tuple[int, dict, str]:
    capsys.readouterr()
    monkeypatch.setattr(sys, "stderr", stderr)
    code = main(list(args))
    monkeypatch.undo()
    return code, json.loads(capsys.readouterr().out), stderr.getvalue()


def test_walkforward_shows_months_on_a_terminal_and_its_json_does_not_change(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, watched, err = _cli(monkeypatch, capsys, Terminal(), *WALKFORWARD)
    assert code == 0 and "walk-forward: 0/3 months" in err and "3/3 months" in err, err
    _, piped, piped_err = _cli(monkeypatch, capsys, io.StringIO(), *WALKFORWARD)
    _, quiet, quiet_err = _cli(monkeypatch, capsys, Terminal(), *WALKFORWARD, "--quiet")
    assert "walk-forward:" not in piped_err and "walk-forward:" not in quiet_err
    for report in (watched, piped, quiet):
        report.pop("seconds")
    assert watched == piped == quiet and watched["months"] == 3


def test_train_tune_shows_trials_unless_quiet(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    args = ["train", "--check", "--tune", "--tune-trials", "2", "--n-estimators", "10",
            "--root", str(tmp_path), "--json"]
    code, res, err = _cli(monkeypatch, capsys, Terminal(), *args)
    assert code in (0, 3) and res["check_mode"] and "tuning: 2/2 trials" in err, err
    _, _, quiet_err = _cli(monkeypatch, capsys, Terminal(), *args, "--quiet")
    assert "tuning:" not in quiet_err
