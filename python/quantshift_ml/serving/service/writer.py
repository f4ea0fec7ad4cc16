"""The prediction-log writer: appends to SQLite from its own thread so a slow disk
never delays an answer."""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantshift_ml.serving import predlog

log = logging.getLogger(__name__)


class QueueWorker:
    """What the service's background writers share: a queue and the one thread that
    drains it, which a ``None`` stops (``PredictionWriter``, ``ShadowLogger``)."""

    _queue: queue.Queue[Any]
    _on_error: Callable[[], None]
    """Counts a lost item in the service's metrics."""
    _thread: threading.Thread | None = None
    _start_lock = threading.Lock()
    """Shared by the workers: taken once per worker, when its thread starts."""
    thread_name = "worker"

    def _run(self) -> None:
        raise NotImplementedError

    def _enqueue(self, item: Any, on_full: str) -> None:
        """Queue ``item`` (the thread started on first use); a full queue is counted and
        logged (``on_full``), never raised: a request does not wait for a writer."""
        if self._thread is None:  # checked again under the lock: started once
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self.thread_name,
                                                    daemon=True)
                    self._thread.start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._on_error()
            log.error("%s", on_full)

    def flush(self) -> None:
        """Block until everything queued so far is written (or has failed)."""
        if self._thread is not None:
            self._queue.join()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)


class PredictionWriter(QueueWorker):
    """Appends every served prediction to the prediction log from one background thread.

    An append (open, insert, commit, close) costs milliseconds, ten to a hundred times
    the inference itself; a queue keeps it off the request path. The thread writes
    everything queued since its last write in one transaction, and waits
    ``linger_seconds`` after the first of a batch so that under load a few hundred
    rows share one open and commit (one per request cost about 1.5 ms of CPU per
    request, benchmarks/bench_http.py). ``close`` (called when the server stops,
    SIGTERM included) writes everything still queued; only a hard kill can lose
    the predictions of the last ``linger_seconds``. A failed write (disk full,
    locked database) is logged and counted per prediction, and never fails a request.
    """

    def __init__(self, root: Path, on_error: Callable[[], None] = lambda: None,
                 maxsize: int = 10_000, linger_seconds: float = 0.05,
                 max_batch: int = 1000) -> None:
        self.root = root
        self.linger_seconds = linger_seconds
        self.max_batch = max_batch
        self._on_error = on_error
        self._queue: queue.Queue[predlog.Prediction | None] = queue.Queue(maxsize)
        self.thread_name = "predlog"

    def put(self, p: predlog.Prediction) -> None:
        self._enqueue(p, f"prediction log queue full: prediction for {p.bar_date} not logged")

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is not None and self.linger_seconds > 0:
                time.sleep(self.linger_seconds)  # let the batch fill
            batch, stop = self._drain(first)
            try:
                predlog.append_many(self.root, batch)
            except (sqlite3.Error, OSError) as exc:
                for _ in batch:
                    self._on_error()
                log.error("%d prediction(s) not logged: %s: %s", len(batch),
                          type(exc).__name__, exc)
            finally:
                for _ in range(len(batch) + stop):
                    self._queue.task_done()
            if stop:
                return

    def _drain(self, first: predlog.Prediction | None
               ) -> tuple[list[predlog.Prediction], bool]:
        """``first`` and what else is queued, up to ``max_batch``; (batch, stop seen)."""
        batch: list[predlog.Prediction] = []
        item = first
        while True:
            if item is None:
                return batch, True
            batch.append(item)
            if len(batch) >= self.max_batch:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
