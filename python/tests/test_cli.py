"""The CLI contract: JSON on stdout, exit codes, nothing touched on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantshift_ml.cli.dispatch import main

from .conftest import tree_digest


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(list(args))
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip().startswith("{") else {}


def test_train_promote_json_then_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    code, res = _run(capsys, "train", "--source", "bundled", "--root", str(tmp_path),
                     "--promote", "--json")
    assert code == 0 and res["ok"] and res["promoted"]
    assert res["gate"]["passed"] and res["metrics"]["test_accuracy"] >= 0.75
    code, st = _run(capsys, "status", "--root", str(tmp_path), "--json")
    assert code == 0 and st["active"]["sha256"] == res["sha256"]
    assert st["active"]["integrity"] == "ok"
    code, v = _run(capsys, "verify", "--root", str(tmp_path), "--json")
    assert code == 0 and v["verified"][0]["sha256"] == res["sha256"]
    code, p = _run(capsys, "predict", "--root", str(tmp_path), "--json")
    assert code == 0 and p["regime"] in {"Bull", "Bear", "High Vol", "Low Vol", "Crisis"}
    assert p["as_of"] == "2018-12-31"

    # a refused gate: exit 3, the numbers in the message, the active model untouched
    before = tree_digest(tmp_path / "models")
    code, bad = _run(capsys, "train", "--root", str(tmp_path), "--promote", "--json",
                     "--min-accuracy", "0.99", "--as-of", "2011-10-31")
    assert code == 3 and not bad["ok"] and "floor 0.990" in bad["error"]
    after = tree_digest(tmp_path / "models")
    assert {k: v for k, v in after.items() if not k.startswith("staging")} == {
        k: v for k, v in before.items() if not k.startswith("staging")}


@pytest.mark.parametrize("content", [
    "Date,Open,High,Low,Close,Volume\n2018-01-02,1,2,0.5,1.5,100\n",  # too few rows
    "Date,Open,High,Close,Volume\n2018-01-02,1,2,1.5,100\n",  # missing column
])
def test_bad_csv_exit_2_and_store_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            content: str) -> None:
    root = tmp_path / "root"
    assert main(["train", "--root", str(root), "--promote"]) == 0
    capsys.readouterr()
    before = tree_digest(root)
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    code, res = _run(capsys, "train", "--source", "csv", "--data", str(bad), "--root", str(root),
                     "--promote", "--json")
    assert code == 2 and res["error_type"] == "DataError"
    assert tree_digest(root) == before


def test_any_yahoo_csv_trains(tmp_path: Path, yahoo_csv: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    code, res = _run(capsys, "train", "--source", "csv", "--data", str(yahoo_csv),
                     "--root", str(tmp_path), "--json")
    assert code == 0 and res["data"]["source"] == "csv" and not res["promoted"]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "--source", "csv", "--root", str(tmp_path)]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert main(["rollback", "--root", str(tmp_path)]) == 2  # no backups


def test_check_mode_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, res = _run(capsys, "train", "--root", str(tmp_path / "r"), "--check", "--json")
    assert code == 0 and res["check_mode"] and "would" in res
    assert not (tmp_path / "r").exists()


def test_forest_options_reach_the_model_and_its_metadata(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    code, res = _run(capsys, "train", "--root", str(tmp_path), "--promote", "--json",
                     "--n-estimators", "20", "--max-depth", "none", "--max-features", "sqrt",
                     "--seed", "7", "--families", "forest")
    assert code == 0, res
    meta = json.loads((tmp_path / "models/regime_classifier.json").read_text())
    assert meta["params"]["model"] == {
        "n_estimators": 20, "max_depth": None, "max_features": "sqrt", "min_samples_leaf": 1,
        "class_weight": None, "random_state": 7, "max_samples": None, "n_jobs": 1}
    import joblib

    forest = joblib.load(tmp_path / "models/regime_classifier.pkl")["model"].estimator
    assert (len(forest.estimators_), forest.max_depth, forest.max_features,
            forest.random_state) == (20, None, "sqrt", 7)


@pytest.mark.parametrize(("args", "message"), [
    (["--max-features", "1.5"], "max_features must be a fraction in (0, 1]"),
    (["--max-features", "half"], "max_features must be"),
    (["--n-estimators", "0"], "n_estimators must be a positive integer"),
    (["--max-depth", "2.5"], "max_depth must be a positive integer or none"),
    (["--class-weight", "heavy"], "class_weight must be none, balanced or balanced_subsample"),
    (["--gap", "-1"], "gap must be >= 0"),
    (["--families", "forest,lstm"], "families must be a non-empty list of"),
    (["--families", ","], "families must be a non-empty list of"),
    (["--record-months", "0"], "record_months must be within 1..240"),
    (["--switch-margin", "-0.1"], "switch_margin must be within 0..1"),
])
def test_bad_forest_options_exit_2_before_training(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   args: list[str], message: str) -> None:
    code, res = _run(capsys, "train", "--root", str(tmp_path / "r"), "--promote", "--json", *args)
    assert code == 2 and res["error_type"] == "UsageError" and message in res["error"], res
    assert not (tmp_path / "r" / "models").exists()
