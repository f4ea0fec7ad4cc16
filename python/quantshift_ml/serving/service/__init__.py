"""``quantshift-ml serve``: the regime service behind the systemd unit.

It loads the active model only after its metadata's signature checks out
against a trusted fleet key, its compiled ONNX form's sha256 matches that
metadata and a one-row smoke prediction works (``served.py``: the service never
unpickles); until then
``/healthz`` answers 503 with the reason, so the deploy loop
(playbooks/tasks/rollout.yml) can tell a host that really runs a new model from
one that merely has the file. SIGHUP reloads the model without dropping
requests: the new one is loaded and checked completely, then swapped in under a
lock; a failed reload keeps serving the previous model and says so.

Engine: always the signed compiled model (onnxruntime), whose parity with
scikit-learn was checked at training. ``/healthz`` names it and the reason.

Endpoints: ``GET /healthz``, ``GET /regime?symbol=SPY``, ``GET /metrics``
(Prometheus exposition). See docs/service.md.

The package by concern: ``market`` (bars and the newest feature row, refreshed in
the background), ``app`` (the service object: model, market, A/B arm, prediction
log, metrics), ``server`` (the ASGI app on uvicorn, signals, ``serve``), ``metrics``
(Prometheus registry) and ``writer`` (the prediction log's background writer).
The model holder and its verified loading are ``quantshift_ml.serving.served``.
"""

from quantshift_ml.serving.served import Loaded, ModelHolder
from quantshift_ml.serving.service.app import RegimeService
from quantshift_ml.serving.service.market import MarketCache, Snapshot, bar_age_days
from quantshift_ml.serving.service.metrics import Metrics
from quantshift_ml.serving.service.server import (
    RegimeApp,
    RegimeServer,
    build_server,
    install_signal_handlers,
    serve,
)
from quantshift_ml.serving.service.writer import PredictionWriter

__all__ = ["Loaded", "MarketCache", "Metrics", "ModelHolder", "PredictionWriter", "RegimeApp",
           "RegimeServer", "RegimeService", "Snapshot", "bar_age_days", "build_server",
           "install_signal_handlers", "serve"]
