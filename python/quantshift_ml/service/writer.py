"""The prediction-log writer: appends to SQLite from its own thread so a slow disk
never delays an answer."""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from quantshift_ml import predlog

log = logging.getLogger(__name__)


class PredictionWriter:
    """Appends every served prediction to the prediction log from one background thread.

    An append (open, insert, commit, close) costs milliseconds, ten to a hundred times
    the inference itself; a queue keeps it off the request path. ``close`` (called
    when the server stops, SIGTERM included) writes everything still queued; only a
    hard kill can lose the few predictions of the last milliseconds. A failed append
    (disk full, locked database) is logged and counted, and never fails a request.
    """

    def __init__(self, root: Path, on_error: Callable[[], None] = lambda: None,
                 maxsize: int = 10_000) -> None:
        self.root = root
        self._on_error = on_error
        self._queue: queue.Queue[predlog.Prediction | None] = queue.Queue(maxsize)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def put(self, p: predlog.Prediction) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="predlog", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(p)
        except queue.Full:
            self._on_error()
            log.error("prediction log queue full: prediction for %s not logged", p.bar_date)

    def _run(self) -> None:
        while True:
            p = self._queue.get()
            try:
                if p is None:
                    return
                predlog.append(self.root, p)
            except (sqlite3.Error, OSError) as exc:
                self._on_error()
                log.error("prediction not logged: %s: %s", type(exc).__name__, exc)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Block until everything queued so far is written (or has failed)."""
        if self._thread is not None:
            self._queue.join()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
