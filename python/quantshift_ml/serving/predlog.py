"""The prediction log: every regime the service hands out, for live accuracy.

SQLite under ``ROOT/data/predictions.sqlite`` (the service's only writable
place besides logs). The monitor later scores logged predictions whose outcome
is known against the labeler's realised label.

Every request is logged (``read``), but a request is not a live sample: a client
that asks thirty times about one bar, or a service stuck on stale data that
answers about the same old bar all day, would otherwise decide the live
accuracy on its own. ``samples`` gives one row per (symbol, bar_date,
model_version), the first one logged, with how many requests it stands for.
The deduplication is done when reading, not by refusing rows, so databases
written before it existed keep every row and need no rewrite: opening one only
adds the index the grouping uses.

A/B columns (ab.py): ``arm`` is the arm served (``regime`` is its answer),
``ml_regime`` and ``rules_regime`` are both arms' answers, ``client`` the bot's id.
They are added to older databases on first open (NULL in old rows, which read
as the model's answer served to no particular client).

The ``shadows`` table (``ShadowAnswer``): every family's answer for a bar, the
release's champion's included, one row per (symbol, bar, family,
model version), kept by a unique key, so the first answer stands whatever
repeats (docs/model.md, "The live record").
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from quantshift_ml.errors import IntegrityError

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    ts TEXT NOT NULL,            -- UTC time the prediction was served (ISO 8601)
    symbol TEXT NOT NULL,
    bar_date TEXT NOT NULL,      -- the as-of bar the regime describes (YYYY-MM-DD)
    regime TEXT NOT NULL,
    probabilities TEXT NOT NULL, -- JSON object regime -> probability
    model_version TEXT NOT NULL,
    arm TEXT,                    -- the A/B arm served (ml | rules); NULL: before A/B
    ml_regime TEXT,              -- the model's answer (served or not)
    rules_regime TEXT,           -- the rule's answer (served or not)
    client TEXT                  -- the client id the bot passed
)
"""
SHADOW_SCHEMA = """
CREATE TABLE IF NOT EXISTS shadows (
    ts TEXT NOT NULL,            -- UTC time the answer was computed (ISO 8601)
    symbol TEXT NOT NULL,
    bar_date TEXT NOT NULL,
    family TEXT NOT NULL,        -- the family that answered (the champion too)
    champion INTEGER NOT NULL,   -- 1: the release's champion (its answer, whichever arm served)
    regime TEXT NOT NULL,
    model_version TEXT NOT NULL, -- the release that carried the family
    UNIQUE (symbol, bar_date, family, model_version)
)
"""
AB_COLUMNS = ("arm", "ml_regime", "rules_regime", "client")
SAMPLE_INDEX = """
CREATE INDEX IF NOT EXISTS predictions_by_sample
    ON predictions (symbol, bar_date, model_version, ts)
"""
"""Added to existing databases on first open; it changes no row."""

_COLUMNS = ("ts, symbol, bar_date, regime, probabilities, model_version, arm, ml_regime, "
            "rules_regime, client")
_FIRST_PER_SAMPLE = f"""
SELECT {_COLUMNS}, requests FROM (
    SELECT {_COLUMNS}, rowid AS seq,
           ROW_NUMBER() OVER (PARTITION BY symbol, bar_date, model_version
                              ORDER BY ts, rowid) AS nth,
           COUNT(*) OVER (PARTITION BY symbol, bar_date, model_version) AS requests
    FROM predictions)
WHERE nth = 1
ORDER BY ts, seq
"""


def db_path(root: Path) -> Path:
    return Path(root) / "data" / "predictions.sqlite"


@contextmanager
def _connect(root: Path) -> Iterator[sqlite3.Connection]:
    path = db_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.is_symlink():  # sqlite would follow it and write wherever it points
            raise IntegrityError(f"{p} is a symlink; the prediction log is never written "
                                 "through a link: remove it")
    with closing(sqlite3.connect(path, timeout=10)) as conn:
        # WAL + NORMAL: an append costs no fsync of the whole database, and the
        # monitor can read while the service writes
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(SCHEMA)
        conn.execute(SHADOW_SCHEMA)
        have = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
        for col in AB_COLUMNS:
            if col not in have:  # a database written before A/B: add, rewrite nothing
                conn.execute(f"ALTER TABLE predictions ADD COLUMN {col} TEXT")
        conn.execute(SAMPLE_INDEX)
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
    arm: str = "ml"
    ml_regime: str | None = None
    rules_regime: str | None = None
    client: str = ""

    @property
    def model_regime(self) -> str:
        """The model's answer, whichever arm was served (live accuracy judges the model)."""
        return self.ml_regime or (self.regime if self.arm == "ml" else "")

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes a live sample: one per bar of a symbol per model version."""
        return self.symbol, self.bar_date, self.model_version


@dataclass(frozen=True)
class Sample:
    """The first logged prediction for one key, and how many requests asked for it."""

    prediction: Prediction
    requests: int


def append(root: Path, p: Prediction) -> None:
    """Log one served prediction (every request, duplicates included)."""
    append_many(root, [p])


def append_many(root: Path, predictions: Sequence[Prediction]) -> None:
    """Log several served predictions in one transaction, in order.

    Opening the database (its checks, pragmas and schema) costs far more than a
    row: the service's writer logs everything queued since its last write at once.
    """
    if not predictions:
        return
    rows = _rows(predictions)
    with _connect(root) as conn:
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        per = max(1, min(MAX_ROWS_PER_INSERT, limit // len(rows[0])))
        for start in range(0, len(rows), per):
            chunk = rows[start:start + per]
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
            conn.execute(f"INSERT INTO predictions ({_COLUMNS}) VALUES {values}",
                         [v for row in chunk for v in row])


MAX_ROWS_PER_INSERT = 500
"""Rows per multi-row INSERT. One statement is one step, and the sqlite3 module hands
the GIL over at every step: ``executemany`` handed it over once per row, thousands
of times a batch, each time the request thread had to wait to get it back."""


def _rows(predictions: Sequence[Prediction]) -> list[tuple[str | None, ...]]:
    """The rows to insert; each distinct probabilities object serialised once per batch.

    The service's writer thread builds them while requests are answered on the
    same interpreter: a batch's requests mostly share one bar and one answer, and
    ``json.dumps`` per row was most of the Python time the writer held the GIL for
    (benchmarks/bench_latency.py's service path: p99 with the log on against off).
    """
    memo: dict[tuple[tuple[str, float], ...], str] = {}
    rows: list[tuple[str | None, ...]] = []
    for p in predictions:
        key = tuple(p.probabilities.items())
        text = memo.get(key)
        if text is None:
            text = memo[key] = json.dumps(p.probabilities)
        rows.append((p.ts, p.symbol, p.bar_date, p.regime, text, p.model_version, p.arm,
                     p.ml_regime, p.rules_regime, p.client))
    return rows


def _prediction(row: tuple[str, ...]) -> Prediction:
    return Prediction(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5],
                      arm=row[6] or "ml", ml_regime=row[7], rules_regime=row[8],
                      client=row[9] or "")


def read(root: Path) -> list[Prediction]:
    """All logged predictions, oldest first; empty when there is no log yet."""
    if not db_path(root).exists():
        return []
    with _connect(root) as conn:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM predictions ORDER BY ts, rowid").fetchall()
    return [_prediction(r) for r in rows]


def samples(root: Path) -> list[Sample]:
    """One sample per (symbol, bar_date, model_version): the first logged, oldest first.

    The first, not the latest or the majority: it is what the service answered
    when the bar was new, and no later request can replace it.
    """
    if not db_path(root).exists():
        return []
    with _connect(root) as conn:
        rows = conn.execute(_FIRST_PER_SAMPLE).fetchall()
    return [Sample(_prediction(r[:10]), int(r[10])) for r in rows]


_FIRST_PER_ARM = _FIRST_PER_SAMPLE.replace(
    "PARTITION BY symbol, bar_date, model_version",
    "PARTITION BY symbol, bar_date, COALESCE(arm, 'ml'), model_version")


def arm_samples(root: Path) -> list[Sample]:
    """One sample per (symbol, bar_date, arm served, model_version), the first logged."""
    if not db_path(root).exists():
        return []
    with _connect(root) as conn:
        rows = conn.execute(_FIRST_PER_ARM).fetchall()
    return [Sample(_prediction(r[:10]), int(r[10])) for r in rows]


@dataclass(frozen=True)
class ShadowAnswer:
    """One family's answer for one bar, from the release ``model_version`` carried."""

    ts: str
    symbol: str
    bar_date: str
    family: str
    champion: bool
    regime: str
    model_version: str


def append_shadows(root: Path, answers: Sequence[ShadowAnswer]) -> int:
    """Log answers; one already logged for the same key is kept. Returns rows added."""
    if not answers:
        return 0
    with _connect(root) as conn:
        before = conn.total_changes
        conn.executemany("INSERT OR IGNORE INTO shadows (ts, symbol, bar_date, family, champion, "
                         "regime, model_version) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [(a.ts, a.symbol, a.bar_date, a.family, int(a.champion), a.regime,
                           a.model_version) for a in answers])
        return int(conn.total_changes - before)


def shadow_answers(root: Path) -> list[ShadowAnswer]:
    """Every logged family answer, oldest bar first; empty when there is no log yet."""
    if not db_path(root).exists():
        return []
    with _connect(root) as conn:
        rows = conn.execute("SELECT ts, symbol, bar_date, family, champion, regime, model_version "
                            "FROM shadows ORDER BY bar_date, symbol, model_version, family"
                            ).fetchall()
    return [ShadowAnswer(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]) for r in rows]
