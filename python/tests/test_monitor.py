"""quantshift-ml monitor: Nagios exit codes, JSON, textfile, live accuracy, daily log."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from quantshift_ml import operations, predlog
from quantshift_ml.cli import main
from quantshift_ml.data import BundledSource
from quantshift_ml.features import compute_features
from quantshift_ml.labels import HmmLabeler

from .conftest import FAST, OPEN


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mon")
    for as_of in ("2017-06-30", "2017-12-29", "2018-06-29", "2018-12-31"):
        operations.train(BundledSource(), root=root, config=FAST, gate=OPEN, promote=True,
                         as_of=as_of)
    return root


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _age(root: Path, days: float) -> None:
    meta_path = root / "models/regime_classifier.json"
    meta = json.loads(meta_path.read_text())  # trained_at is not covered by the pkl's sha
    meta["trained_at"] = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)).isoformat()
    meta_path.write_text(json.dumps(meta))


def _monitor(capsys: pytest.CaptureFixture[str], root: Path, *extra: str) -> tuple[int, dict]:
    code = main(["monitor", "--root", str(root), "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def _status(report: dict, name: str) -> str:
    return next(c["status"] for c in report["checks"] if c["name"] == name)


def test_fresh_model_is_ok_with_textfile_and_log(trained: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    prom = tmp_path / "qs.prom"
    code, rep = _monitor(capsys, root, "--textfile", str(prom))
    assert code == 0 and rep["status"] == "OK", rep
    assert _status(rep, "live_accuracy") == "UNKNOWN"  # no predictions logged: no number
    text = prom.read_text()
    assert 'quantshift_model_status{host="' in text and "quantshift_backups" in text
    assert list((root / "logs").glob("model-monitoring-*.log"))


def test_31_day_old_model_warns(trained: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    _age(root, 31)
    code, rep = _monitor(capsys, root)
    assert code == 1 and _status(rep, "age_days") == "WARNING"


def test_46_day_old_model_is_critical(trained: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    _age(root, 46)
    code, rep = _monitor(capsys, root)
    assert code == 2 and _status(rep, "age_days") == "CRITICAL"


def test_tampered_model_is_critical(trained: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    pkl = root / "models/regime_classifier.pkl"
    data = bytearray(pkl.read_bytes())
    data[-10] ^= 0xFF
    pkl.write_bytes(bytes(data))
    code, rep = _monitor(capsys, root)
    assert code == 2 and _status(rep, "integrity") == "CRITICAL"


def test_missing_model_is_critical(trained: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    (root / "models/regime_classifier.pkl").unlink()
    code, rep = _monitor(capsys, root)
    assert code == 2 and _status(rep, "integrity") == "CRITICAL"


def test_missing_store_is_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, rep = _monitor(capsys, tmp_path / "nothing")
    assert code == 3 and rep["status"] == "UNKNOWN"


def _log_predictions(root: Path, wrong: bool, n: int = 60) -> None:
    """n predictions of the newest bars; the last 20 are not settled (hmm), 40 are scored."""
    bars = BundledSource().load()
    labels = HmmLabeler().label(bars, compute_features(bars)).iloc[-n:].fillna("Bull")
    other = {"Bull": "Bear", "Bear": "Bull", "High Vol": "Low Vol", "Low Vol": "Crisis",
             "Crisis": "Bull"}
    for day, real in labels.items():
        regime = other[real] if wrong else real
        predlog.append(root, predlog.Prediction(
            ts=f"{day.date()}T21:00:00+00:00", symbol="SPY", bar_date=str(day.date()),
            regime=regime, probabilities={regime: 1.0}, model_version="x"))


def test_low_live_accuracy_is_critical(trained: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    _log_predictions(root, wrong=True)
    code, rep = _monitor(capsys, root)
    live = next(c for c in rep["checks"] if c["name"] == "live_accuracy")
    assert code == 2 and live["status"] == "CRITICAL" and live["value"] == 0.0
    assert "over 40 predictions" in live["message"]


def test_good_live_accuracy_is_scored(trained: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    _log_predictions(root, wrong=False)
    code, rep = _monitor(capsys, root)
    live = next(c for c in rep["checks"] if c["name"] == "live_accuracy")
    assert code == 0 and live["value"] == 1.0


def test_too_few_backups_warn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    operations.train(BundledSource(), root=tmp_path, config=FAST, gate=OPEN, promote=True)
    code, rep = _monitor(capsys, tmp_path)
    assert code == 1 and _status(rep, "backups") == "WARNING"


def test_old_daily_logs_are_pruned(trained: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(trained, tmp_path / "r")
    old = root / "logs/model-monitoring-20000101.log"
    old.write_text("old\n")
    _monitor(capsys, root)
    assert not old.exists()
