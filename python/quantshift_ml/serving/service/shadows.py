"""The live record's source: every family's answer for each new bar, off the request path.

A release carries the signed specs of the field's other filter families
(``metadata.shadows``, ``champion.shadows``). The first request about a bar hands
the champion's answer and the release to this logger; its thread evaluates each
shadow spec on the cached bars up to that bar (the code that serves a filter
champion: ``filterspec``, never scikit-learn) and logs every family's answer, the
champion's included, to the prediction log's ``shadows`` table. Once per (bar,
release) in memory, and the table's unique key keeps the first answer after a
restart; a request never waits for it, and a failure of any kind is logged and
counted (``quantshift_prediction_log_errors_total``), never raised, and the thread
goes on with the next bar (it costs the record a row, not a client an answer).

"Champion" here is the release's own answer, whichever A/B arm was served: the
record compares families, and the rules arm is the A/B report's to judge.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantshift_ml.serving import predlog
from quantshift_ml.serving.service.market import MarketCache, utcnow
from quantshift_ml.serving.service.writer import QueueWorker

log = logging.getLogger(__name__)

Job = tuple[str, str, str, str, str, dict[str, Any]]
"""(symbol, bar_date, version, champion family, champion's regime, shadow specs)."""


def answers_for(bars: Any, features: Any, job: Job) -> list[predlog.ShadowAnswer]:
    """Every family's answer for the job's bar: the champion's, then each shadow spec's."""
    from quantshift_ml.model.filterspec import FilterSpec, compose_row, p_turbulent
    from quantshift_ml.model.regimes import RULE_FEATURES

    symbol, bar_date, version, champion, champion_regime, shadows = job
    ts = utcnow()
    out = [predlog.ShadowAnswer(ts, symbol, bar_date, champion, True, champion_regime,
                                version)]
    upto = bars.loc[:bar_date]
    row = features.loc[bar_date]
    for name, spec_dict in sorted(shadows.items()):
        spec = FilterSpec.from_dict(spec_dict, f"shadow {name}")
        p = float(p_turbulent(spec, upto)[-1])
        regime, _ = compose_row(spec, (p, *(float(row[c]) for c in RULE_FEATURES)))
        out.append(predlog.ShadowAnswer(ts, symbol, bar_date, name, False, regime, version))
    return out


class ShadowLogger(QueueWorker):
    """One background thread that logs every family's answer once per bar and release."""

    def __init__(self, root: Path, market: MarketCache,
                 on_error: Callable[[], None] = lambda: None, maxsize: int = 1000) -> None:
        self.root = root
        self.market = market
        self._on_error = on_error
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize)
        self._seen: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()
        self.thread_name = "shadows"

    def put(self, meta: dict[str, Any], symbol: str, bar_date: str, champion_regime: str,
            version: str | None = None) -> None:
        """Queue the bar once per release; a set lookup for every later request about it.

        ``version``: the release's, computed once per load by the caller on the request
        path (default: read from ``meta``)."""
        version = version or str(meta.get("version"))
        key = (symbol, bar_date, version)
        if key in self._seen:
            return
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
        self._enqueue((symbol, bar_date, version, str(meta.get("family") or "forest"),
                       champion_regime, dict(meta.get("shadows") or {})),
                      f"shadow queue full: the families' answers for {bar_date} not logged")

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                bars, features = self.market.frames()
                predlog.append_shadows(self.root, answers_for(bars, features, job))
            except Exception as exc:  # the thread must outlive any one bar's failure
                self._on_error()
                log.error("families' answers for %s not logged: %s: %s",
                          job[1] if job else "?", type(exc).__name__, exc)
            finally:
                self._queue.task_done()
