"""Issue 28: what ``quantshift-ml serve`` imports before it says READY=1.

The start budget (0.3 CPU-s, benchmarks/bench_service_start.py) holds only while
the CLI and the service import neither pandas nor the training stack: pandas is
loaded with the first bars, after READY=1. A fresh interpreter is the only honest
place to check this (the test process has imported everything already).
"""

from __future__ import annotations

import json
import subprocess
import sys

from quantshift_ml import defaults
from quantshift_ml.model import features, labels
from quantshift_ml.serving.service import market

HEAVY = ("pandas", "sklearn", "scipy", "joblib", "hmmlearn", "shap", "skl2onnx", "smtplib")


def _imported_after(code: str) -> dict[str, bool]:
    probe = (f"import sys\n{code}\nimport json\n"
             f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r} + ('numpy',)}}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_cli_imports_no_numpy_or_heavy_dependency() -> None:
    """numpy too: ``serve`` sets one BLAS thread before numpy is first imported."""
    loaded = _imported_after("import quantshift_ml.cli.dispatch as c\nc.build_parser()")
    assert not any(loaded.values()), loaded


def test_service_up_to_a_built_server_imports_no_pandas(tmp_path: object) -> None:
    code = ("from pathlib import Path\n"
            "from quantshift_ml.cli.dispatch import _source, build_parser\n"
            "from quantshift_ml.serving.service import RegimeService, build_server\n"
            f"a = build_parser().parse_args(['serve', '--root', {str(tmp_path)!r}])\n"
            "s = RegimeService(Path(a.root), _source(a, Path(a.root)), 'SPY')\n"
            "s.reload()\nbuild_server(s, '127.0.0.1', 0).server_close()")
    loaded = _imported_after(code)
    assert not any(v for k, v in loaded.items() if k != "numpy"), loaded


def test_constants_kept_apart_from_pandas_agree() -> None:
    assert sorted(defaults.LABELERS) == sorted(labels.LABELERS)
    assert market.HMM_FILTER == features.HMM_FILTER
