"""Many markets: one walk-forward per market of a universe, one summary (issues 28, 31).

One market's walk-forward says little about whether the product beats the strongest
classic signal in general; a universe of markets does. Every market runs the
unchanged ``walkforward_rows`` with the same configuration, gate and champion
policy, on local processes (joblib, loky) or on an existing Dask distributed
cluster. The client reads every market's bars before any work starts (a bad entry
fails at once, naming it) and ships the bars to the workers, so workers need the
package but no shared filesystem and no market data of their own.

Universe file: JSON (``{"markets": [...]}`` or a bare list) whose entries are
``{"name": N, "csv": PATH}``, ``{"name": N, "symbol": SYM}`` or
``{"name": N, "bundled": true}``, or text with one ``[NAME] SOURCE`` a line
(``#`` comments); a text SOURCE is ``bundled``, a CSV path (has a ``/`` or ends
in ``.csv``/``.csv.gz``) or else a yfinance symbol. Relative CSV paths resolve
against the universe file's folder.

The result does not depend on where the markets ran: each market's report is a
function of its bars and settings alone, and markets are put back in the
universe's order before anything is pooled.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml import REGIMES
from quantshift_ml.champion import policy as ch
from quantshift_ml.data.sources import BundledSource, CsvSource, YFinanceSource
from quantshift_ml.errors import DataError, QuantshiftError, UsageError
from quantshift_ml.training import report as rp
from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.gate import GateConfig
from quantshift_ml.walkforward.monthly import ChampionPolicy, walkforward_rows

BOOTSTRAP_DRAWS = rp.BOOTSTRAP_DRAWS
BOOTSTRAP_SEED = rp.BOOTSTRAP_SEED
CLUSTER_HINT = "pip install 'quantshift-ml[cluster]'"


@dataclass(frozen=True)
class Market:
    """One universe entry: its name, kind (csv, symbol, bundled) and where it is."""

    name: str
    kind: str
    where: str

    @property
    def origin(self) -> str:
        return "bundled" if self.kind == "bundled" else f"{self.kind}:{self.where}"


def _text_entry(line: str, folder: Path) -> Market:
    """``[NAME] SOURCE``: SOURCE is bundled, a CSV path or a yfinance symbol."""
    parts = line.split()
    if len(parts) > 2:
        raise UsageError(f"universe line {line!r}: expected '[NAME] SOURCE'")
    src = parts[-1]
    if src == "bundled":
        kind = "bundled"
    elif "/" in src or src.lower().endswith((".csv", ".csv.gz")):
        kind = "csv"
    else:
        kind = "symbol"
    return _market(parts[0] if len(parts) == 2 else None, kind, src, folder)


def _json_entry(entry: Any, folder: Path) -> Market:
    """``{"name": N, "csv" | "symbol": X}`` or ``{"name": N, "bundled": true}``."""
    if isinstance(entry, str):
        return _text_entry(entry, folder)
    kinds = [k for k in ("csv", "symbol", "bundled") if isinstance(entry, dict) and k in entry]
    if len(kinds) != 1:
        raise UsageError(f"universe entry {entry!r}: give exactly one of csv, symbol, bundled")
    kind = kinds[0]
    where = "bundled" if kind == "bundled" else str(entry[kind])
    return _market(entry.get("name"), kind, where, folder)


def _market(name: str | None, kind: str, where: str, folder: Path) -> Market:
    if kind == "csv":
        path = Path(where).expanduser()
        where = str(path if path.is_absolute() else folder / path)
    default = {"bundled": "sp500", "symbol": where}.get(kind) or Path(where).name.split(".")[0]
    name = str(name if name is not None else default).strip()
    if not name or any(c.isspace() for c in name):
        raise UsageError(f"universe entry {where!r}: name {name!r} must be one word")
    return Market(name=name, kind=kind, where=where)


def read_universe(path: Path) -> list[Market]:
    """The universe file's markets, checked: it exists, lists any, names are unique."""
    if not path.is_file():
        raise UsageError(f"--universe {path}: file not found")
    text = path.read_text(encoding="utf-8")
    folder = path.resolve().parent
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--universe {path}: not valid JSON: {exc}") from exc
        entries = doc.get("markets") if isinstance(doc, dict) else doc
        if not isinstance(entries, list):
            raise UsageError(f"--universe {path}: expected a list of markets or "
                             '{"markets": [...]}')
        markets = [_json_entry(e, folder) for e in entries]
    else:
        lines = (ln.split("#", 1)[0].strip() for ln in text.splitlines())
        markets = [_text_entry(ln, folder) for ln in lines if ln]
    if not markets:
        raise UsageError(f"--universe {path}: lists no market")
    seen: set[str] = set()
    for m in markets:
        if m.name in seen:
            raise UsageError(f"--universe {path}: market name {m.name!r} appears twice; "
                             "give each entry its own name")
        seen.add(m.name)
    return markets


def load_bars(markets: list[Market], *, root: Path | None = None,
              max_cache_age_hours: float = 72.0) -> list[pd.DataFrame]:
    """Every market's bars, read here on the client, before any walk-forward starts."""
    out = []
    for m in markets:
        src: Any = (BundledSource() if m.kind == "bundled" else CsvSource(Path(m.where))
                    if m.kind == "csv" else YFinanceSource(
                        symbol=m.where, cache_dir=root / "data" if root else None,
                        max_cache_age_hours=max_cache_age_hours))
        try:
            out.append(src.load())
        except QuantshiftError as exc:
            raise DataError(f"universe market {m.name!r} ({m.origin}): {exc}") from exc
    return out


def market_task(name: str, origin: str, bars: pd.DataFrame, config: TrainConfig,
                gate: GateConfig, start: str | None, policy: ChampionPolicy,
                keep_report: bool) -> dict[str, Any]:
    """One market's walk-forward, where it runs: its summary row, its per-row
    correctness (small arrays for the pooled bootstrap) and, if asked, its report."""
    started = time.monotonic()
    report, rows = walkforward_rows(bars, config, gate, start=start, origin=name,
                                    policy=policy)
    truth = rows["truth"]
    compact = {"truth": ch.encode(truth), "month": rows["month"].astype(np.int32),
               "model_ok": rows["model"] == truth, "strongest_ok": rows["strongest"] == truth}
    summary = _summary_row(name, origin, len(bars), len(truth), report)
    summary["seconds"] = round(time.monotonic() - started, 2)
    return {"summary": summary, "rows": compact, "report": report if keep_report else None}


def _summary_row(name: str, origin: str, n_bars: int, n_rows: int, report: dict[str, Any]
                 ) -> dict[str, Any]:
    """The per-market line of the summary, read from the report's own keys."""
    econ = report["economics"]
    champ = report["champion"]
    families = {}
    for f in champ["policy"]["families"]:
        row = ch.WALKFORWARD_ROWS[f]
        scores = report["model"] if row == "model" else report["baselines"][row]
        families[f] = {"balanced_accuracy": scores["balanced_accuracy"],
                       "sharpe": econ[row]["sharpe"]}
    sb = report["strongest_baseline"]
    return {"name": name, "origin": origin, "bars": n_bars,
            "rows": n_rows,
            "months": report["months"], "first_month": report["first_month"],
            "last_month": report["last_month"],
            "model_balanced_accuracy": report["model"]["balanced_accuracy"],
            "strongest_baseline": {k: sb[k] for k in ("name", "balanced_accuracy", "margin",
                                                      "ci95", "share_of_draws_above_0")},
            "champion": {"balanced_accuracy": champ["balanced_accuracy"],
                         "sharpe": econ["champion"]["sharpe"],
                         "switches": champ["policy"]["switches"]},
            "families": families, "buy_and_hold_sharpe": econ["buy_and_hold"]["sharpe"]}


def _counts(rows: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per month and regime: the model's hits, the strongest baseline's, the support."""
    _, m = np.unique(rows["month"], return_inverse=True)
    shape = (int(m.max()) + 1, len(REGIMES))
    hm, hb, sup = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    known = rows["truth"] >= 0
    idx = (m[known], rows["truth"][known].astype(int))
    np.add.at(sup, idx, 1.0)
    np.add.at(hm, idx, rows["model_ok"][known].astype(float))
    np.add.at(hb, idx, rows["strongest_ok"][known].astype(float))
    return hm, hb, sup


def _balanced(hits: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Balanced accuracy of each row of (draws x regimes) counts; absent regimes skipped."""
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, hits / np.where(support > 0, support, 1.0), np.nan)
    return np.nanmean(recall, axis=1)


def pooled_margin(rows: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Mean over markets of (model - that market's strongest baseline) balanced accuracy,
    with a two-stage bootstrap: markets drawn with replacement, then, inside each drawn
    market, its months drawn with replacement (fresh months for every draw and slot)."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    n = len(rows)
    pick = rng.integers(0, n, size=(BOOTSTRAP_DRAWS, n))
    point, per_slot = [], []
    for r in rows:
        hm, hb, sup = _counts(r)
        tot = (hm.sum(0, keepdims=True), hb.sum(0, keepdims=True), sup.sum(0, keepdims=True))
        point.append(float(_balanced(tot[0], tot[2])[0] - _balanced(tot[1], tot[2])[0]))
        k = len(sup)
        w = rng.multinomial(k, np.full(k, 1.0 / k), size=BOOTSTRAP_DRAWS * n)
        per_slot.append(_balanced(w @ hm, w @ sup) - _balanced(w @ hb, w @ sup))
    slots = np.arange(BOOTSTRAP_DRAWS)[:, None] * n + np.arange(n)[None, :]
    draws = np.stack(per_slot)[pick, slots].mean(axis=1)
    lo, hi = np.nanpercentile(draws, [2.5, 97.5])
    return {"margin": round(float(np.mean(point)), 4),
            "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "share_of_draws_above_0": round(float(np.mean(draws > 0)), 4),
            "markets_above_0": int(sum(p > 0 for p in point)), "markets": n,
            "method": f"mean over markets of each market's margin; two-stage bootstrap "
                      f"(markets, then month blocks within each), {BOOTSTRAP_DRAWS} draws, "
                      f"seed {BOOTSTRAP_SEED}"}


def _run_local(calls: list[tuple[Any, ...]], jobs: int) -> list[dict[str, Any]]:
    """The markets here: in this process (``jobs`` 1) or on ``jobs`` loky processes."""
    if jobs == 1:
        return [market_task(*c) for c in calls]
    from joblib import Parallel, delayed

    return list(Parallel(n_jobs=jobs, backend="loky")(delayed(market_task)(*c)
                                                       for c in calls))


def _run_dask(calls: list[tuple[Any, ...]], address: str) -> list[dict[str, Any]]:
    """The markets on an existing Dask cluster; dask is imported only here."""
    try:
        from dask.distributed import Client
    except ImportError as exc:
        raise UsageError(f"--scheduler needs dask.distributed, which is not installed: "
                         f"{CLUSTER_HINT}") from exc
    try:
        client = Client(address, timeout="20s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"--scheduler {address}: cannot reach the Dask scheduler: "
                         f"{exc}") from exc
    with client:
        futures = [client.submit(market_task, *c, key=f"quantshift-market-{c[0]}-{k}",
                                 pure=False) for k, c in enumerate(calls)]
        return list(client.gather(futures))


def run_universe(markets: list[Market], bars: list[pd.DataFrame], config: TrainConfig,
                 gate: GateConfig, *, start: str | None = None,
                 policy: ChampionPolicy | None = None, jobs: int = 1,
                 scheduler: str | None = None, out: Path | None = None) -> dict[str, Any]:
    """Every market's walk-forward and the summary; ``out`` also keeps each report."""
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {jobs}")
    if scheduler is not None and jobs != 1:
        raise UsageError("--jobs sets local processes; with --scheduler the cluster's "
                         "workers set how many markets run at once")
    started = time.monotonic()
    pol = policy or ChampionPolicy()
    calls = [(m.name, m.origin, b, config, gate, start, pol, out is not None)
             for m, b in zip(markets, bars, strict=True)]
    results = _run_dask(calls, scheduler) if scheduler else _run_local(calls, jobs)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for r in results:
            (out / f"{r['summary']['name']}.json").write_text(
                json.dumps(r["report"], indent=1, sort_keys=True, default=str) + "\n")
    return {"universe": {"markets": len(markets), "start": start,
                         "ran_on": f"dask:{scheduler}" if scheduler else f"local:{jobs}"},
            "config": config.to_dict(),
            "markets": [r["summary"] for r in results],
            "pooled_margin_vs_strongest": pooled_margin([r["rows"] for r in results]),
            "seconds": round(time.monotonic() - started, 2)}
