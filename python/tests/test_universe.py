"""Issue 28/31: ``walkforward --universe`` (many markets, one summary) and ``--scheduler``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from quantshift_ml.cli.dispatch import main
from quantshift_ml.cli.text import universe_text
from quantshift_ml.walkforward import universe as uv

SPANS = {"from2009": "2009-01-01", "from2010": "2010-06-01", "from2011": "2011-01-01",
         "from2012": "2012-03-01"}
"""Four markets: spans of the bundled S&P 500 that start apart and end together."""
QUICK = ["--years", "1", "--n-estimators", "10", "--start", "2016-06-01", "--quiet", "--json"]
"""A one-year window, a small forest and five reported months keep each market quick."""


@pytest.fixture(scope="module")
def universe_file(tmp_path_factory: pytest.TempPathFactory, bars: pd.DataFrame) -> Path:
    folder = tmp_path_factory.mktemp("universe")
    (folder / "data").mkdir()
    lines = ["# four spans of the bundled S&P 500"]
    for name, first in SPANS.items():
        frame = bars.loc[first:"2016-10-31"].copy()
        frame.index.name = "Date"
        frame.to_csv(folder / "data" / f"{name}.csv")
        lines.append(f"{name} data/{name}.csv")  # relative: against the file's folder
    path = folder / "universe.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["walkforward", *args])
    return code, json.loads(capsys.readouterr().out)


def _without_seconds(summary: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in summary.items() if k != "seconds"}
    out["universe"] = {k: v for k, v in summary["universe"].items() if k != "ran_on"}
    out["markets"] = [{k: v for k, v in m.items() if k != "seconds"} for m in summary["markets"]]
    return out


def test_cluster_and_local_processes_give_the_same_summary(
        universe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        code, on_cluster = _run(capsys, "--root", str(tmp_path), "--universe",
                                str(universe_file), "--scheduler", cluster.scheduler_address,
                                *QUICK)
    assert code == 0, on_cluster
    code, local = _run(capsys, "--root", str(tmp_path), "--universe", str(universe_file),
                       "--jobs", "2", "--out", str(tmp_path / "reports"), *QUICK)
    assert code == 0, local
    assert [m["name"] for m in local["markets"]] == list(SPANS)
    assert all(m["months"] == 5 for m in local["markets"])
    assert on_cluster["universe"]["ran_on"].startswith("dask:")
    assert _without_seconds(on_cluster) == _without_seconds(local)
    pooled = local["pooled_margin_vs_strongest"]
    margins = [m["strongest_baseline"]["margin"] for m in local["markets"]]
    assert pooled["margin"] == pytest.approx(np.mean(margins), abs=1e-4)
    assert pooled["ci95"][0] <= pooled["margin"] <= pooled["ci95"][1]
    table = universe_text(local).splitlines()  # the non-JSON output: a line per market
    assert [ln.split()[0] for ln in table[1:5]] == list(SPANS)
    assert table[5].startswith(f"pooled margin over each market's strongest baseline: "
                               f"{pooled['margin']:+.3f}")
    for m in local["markets"]:  # --out: each market's full report, the row read from it
        report = json.loads((tmp_path / "reports" / f"{m['name']}.json").read_text())
        assert report["strongest_baseline"]["margin"] == m["strongest_baseline"]["margin"]
        assert report["champion"]["balanced_accuracy"] == m["champion"]["balanced_accuracy"]


def test_universe_file_kinds_names_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "u.json").write_text(json.dumps({"markets": [
        {"bundled": True}, {"name": "nq", "csv": "sub/nasdaq.csv.gz"}, {"symbol": "^IXIC"},
        "spy.csv"]}))
    got = uv.read_universe(tmp_path / "u.json")
    assert [(m.name, m.kind) for m in got] == [("sp500", "bundled"), ("nq", "csv"),
                                               ("^IXIC", "symbol"), ("spy", "csv")]
    assert got[1].where == str(tmp_path / "sub" / "nasdaq.csv.gz")
    assert got[2].origin == "symbol:^IXIC"


@pytest.mark.parametrize(("text", "message"), [
    ("# nothing\n\n", "lists no market"),
    ("a x.csv\na y.csv\n", "market name 'a' appears twice"),
    ("a b c.csv\n", "expected '[NAME] SOURCE'"),
])
def test_bad_universe_files_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             text: str, message: str) -> None:
    (tmp_path / "u.txt").write_text(text)
    assert main(["walkforward", "--root", str(tmp_path), "--universe",
                 str(tmp_path / "u.txt")]) == 2
    assert message in capsys.readouterr().err


def test_missing_universe_file_and_unreadable_csv_name_what_failed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walkforward", "--root", str(tmp_path), "--universe",
                 str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt: file not found" in capsys.readouterr().err
    (tmp_path / "junk.csv").write_text("not,a\nprice,file\n")
    (tmp_path / "u.txt").write_text("good bundled\nbad junk.csv\nmissing gone.csv\n")
    assert main(["walkforward", "--root", str(tmp_path), "--universe",
                 str(tmp_path / "u.txt")]) == 2
    assert "universe market 'bad'" in capsys.readouterr().err


def test_universe_conflicts_with_source_options(universe_file: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walkforward", "--root", str(tmp_path), "--universe", str(universe_file),
                 "--source", "csv", "--data", "x.csv"]) == 2
    assert "drop --source/--data" in capsys.readouterr().err
    assert main(["walkforward", "--root", str(tmp_path), "--scheduler", "tcp://x:1"]) == 2
    assert "go with --universe" in capsys.readouterr().err
    assert main(["walkforward", "--root", str(tmp_path), "--universe", str(universe_file),
                 "--scheduler", "tcp://x:1", "--jobs", "2"]) == 2
    assert "cluster's workers" in capsys.readouterr().err


def test_scheduler_without_dask_says_which_extra(universe_file: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # import fails as uninstalled
    assert main(["walkforward", "--root", str(tmp_path), "--universe", str(universe_file),
                 "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "quantshift-ml[cluster]" in capsys.readouterr().err


def test_dask_is_imported_only_for_a_scheduler() -> None:
    code = ("import sys; import quantshift_ml.cli.dispatch, quantshift_ml.walkforward.universe; "
            "print(any(m == 'dask' or m.startswith('dask.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def _rows(model_ok: np.ndarray, strongest_ok: np.ndarray) -> dict[str, np.ndarray]:
    n = len(model_ok)
    return {"truth": np.arange(n, dtype=np.int8) % 5, "month": np.arange(n) // 20,
            "model_ok": model_ok, "strongest_ok": strongest_ok}


def test_pooled_margin_is_the_mean_of_market_margins_with_an_interval() -> None:
    rng = np.random.default_rng(0)
    same = rng.random(200) < 0.6
    level = uv.pooled_margin([_rows(same, same), _rows(same, same)])
    assert level["margin"] == 0.0 and level["ci95"] == [0.0, 0.0]
    ahead = uv.pooled_margin([_rows(np.ones(200, bool), np.zeros(200, bool)),
                              _rows(same, same)])
    assert ahead["margin"] == 0.5 and ahead["ci95"][0] < 0.5 < ahead["ci95"][1]
    assert ahead["markets_above_0"] == 1
