"""The prediction log: every regime the service hands out, for live accuracy.

SQLite under ``ROOT/data/predictions.sqlite`` (the service's only writable
place besides logs). The monitor later scores logged predictions whose outcome
is known against the labeler's realised label.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    ts TEXT NOT NULL,            -- UTC time the prediction was served (ISO 8601)
    symbol TEXT NOT NULL,
    bar_date TEXT NOT NULL,      -- the as-of bar the regime describes (YYYY-MM-DD)
    regime TEXT NOT NULL,
    probabilities TEXT NOT NULL, -- JSON object regime -> probability
    model_version TEXT NOT NULL
)
"""


def db_path(root: Path) -> Path:
    return Path(root) / "data" / "predictions.sqlite"


@contextmanager
def _connect(root: Path) -> Iterator[sqlite3.Connection]:
    path = db_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path, timeout=10)) as conn:
        # WAL + NORMAL: an append costs no fsync of the whole database, and the
        # monitor can read while the service writes
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(SCHEMA)
        yield conn
        conn.commit()


@dataclass(frozen=True)
class Prediction:
    ts: str
    symbol: str
    bar_date: str
    regime: str
    probabilities: dict[str, float]
    model_version: str


def append(root: Path, p: Prediction) -> None:
    with _connect(root) as conn:
        conn.execute("INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?)",
                     (p.ts, p.symbol, p.bar_date, p.regime, json.dumps(p.probabilities),
                      p.model_version))


def read(root: Path) -> list[Prediction]:
    """All logged predictions, oldest first; empty when there is no log yet."""
    if not db_path(root).exists():
        return []
    with _connect(root) as conn:
        rows = conn.execute("SELECT ts, symbol, bar_date, regime, probabilities, model_version "
                            "FROM predictions ORDER BY ts").fetchall()
    return [Prediction(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]
