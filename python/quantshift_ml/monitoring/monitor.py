"""Daily health of one host's model: ``quantshift-ml monitor``.

Checks: integrity (sha256), holdout accuracy from the metadata, live accuracy of
the service's logged predictions whose outcome is now known, model age, free
disk on the models' filesystem, intact backups (as rollback verifies), /healthz, and
drift (``importance_drift``: the active version's SHAP importances against the
previous version's; ``input_drift``: the newest days' inputs against the model's
window; drift.py says how and why).
Exit codes follow Nagios plugins: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
(UNKNOWN only when the store itself cannot be read). A check that cannot
produce a number says "unknown" with the reason (e.g. too few live samples)
and does not raise the overall status: a made-up number would be worse.

Live accuracy counts one sample per (symbol, bar, model version), scored only
against bars present in the monitor's data, and the check judges the active
version alone: otherwise repeated requests or stale data could decide it, and
after a rollback the bad version's predictions would roll the fleet back again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from quantshift_ml.data.sources import DataSource
from quantshift_ml.errors import IntegrityError, QuantshiftError
from quantshift_ml.monitoring import drift_checks
from quantshift_ml.monitoring.checks import CRITICAL, OK, RANK, UNKNOWN, WARNING
from quantshift_ml.monitoring.checks import check as _check
from quantshift_ml.monitoring.context import RunContext
from quantshift_ml.monitoring.textfile import textfile
from quantshift_ml.monitoring.thresholds import ACCURACY_BY_LABELER as ACCURACY_BY_LABELER
from quantshift_ml.monitoring.thresholds import DriftThresholds as DriftThresholds
from quantshift_ml.monitoring.thresholds import Thresholds as Thresholds
from quantshift_ml.monitoring.thresholds import resolve
from quantshift_ml.serving import predlog
from quantshift_ml.store import ModelStore
from quantshift_ml.store.files import append_text, atomic_write_bytes

LOG_DAYS_KEPT = 30


def _f(value: float | None) -> float:
    assert value is not None, "thresholds are resolved first"
    return value


def _low(value: float, warn: float, crit: float) -> str:
    return CRITICAL if value < crit else WARNING if value < warn else OK


@dataclass
class LiveScore:
    """One model version's live record; only ``samples`` and ``hits`` make the accuracy.

    ``pending``: bars in the data whose label has not settled yet (waiting, not
    wrong). ``not_in_data``: bar dates the monitor's data does not have (a
    service on other or stale data, a typo'd date); they are not samples.
    ``requests``: logged predictions behind the counted keys, to show how many
    requests collapsed into one sample.
    """

    samples: int = 0
    hits: int = 0
    pending: int = 0
    not_in_data: int = 0
    requests: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.hits / self.samples if self.samples else None

    def as_dict(self) -> dict[str, Any]:
        acc = self.accuracy
        return {**asdict(self), "accuracy": None if acc is None else round(acc, 4)}


def score_live(logged: Iterable[predlog.Sample], known: dict[str, str | None],
               symbol: str | None = None) -> dict[str, LiveScore]:
    """Per model version: each logged key scored once against the realised label.

    ``known`` maps every bar date in the monitor's data to its settled label, or
    ``None`` while it is not settled. Keys are deduplicated here too, so the
    result never depends on how many requests were logged, whatever the caller
    passes. ``symbol`` keeps only that symbol's predictions (``None``: all).
    """
    scores: dict[str, LiveScore] = {}
    seen: set[tuple[str, str, str]] = set()
    for sample in logged:
        p = sample.prediction
        if (symbol is not None and p.symbol != symbol) or p.key in seen:
            continue
        seen.add(p.key)
        score = scores.setdefault(p.model_version, LiveScore())
        score.requests += sample.requests
        if p.bar_date not in known:
            score.not_in_data += 1
        elif known[p.bar_date] is None:
            score.pending += 1
        else:
            score.samples += 1
            score.hits += int(p.model_regime == known[p.bar_date])
    return scores


def live_scores(root: Path, labeler: dict[str, Any], source: DataSource,
                symbol: str | None = None) -> dict[str, LiveScore]:
    """Per model version, the prediction log's samples scored on the monitor's data."""
    return scores_of(RunContext(root, source, symbol), labeler)


def scores_of(ctx: RunContext, labeler: dict[str, Any]) -> dict[str, LiveScore]:
    """``live_scores`` from the run's reads: the log and the labels read once per run."""
    logged = ctx.samples()
    if not logged:
        return {}
    return score_live(logged, ctx.realised(labeler), ctx.symbol)


def live_accuracy(root: Path, labeler: dict[str, Any], source: DataSource,
                  version: str | None = None) -> tuple[float | None, int]:
    """Share of live samples that match the realised label, and how many count.

    ``version``: that model version's samples only (what the monitor's check
    uses); ``None`` pools every version, each sample still counted once. Only
    predictions whose bar's label is known now are scored (for a forward
    labeler, H bars must have passed); the rest are waiting, not wrong.
    """
    scores = live_scores(root, labeler, source)
    chosen = [s for v, s in scores.items() if version is None or v == version]
    n = sum(s.samples for s in chosen)
    return (sum(s.hits for s in chosen) / n if n else None), n


def _live_check(meta: dict[str, Any], t: Thresholds, ctx: RunContext) -> dict[str, Any]:
    """The live_accuracy check of the active version, with every version's counts."""
    version = str(meta.get("version"))
    try:
        scores = scores_of(ctx, meta.get("labeler") or {})
    except (QuantshiftError, sqlite3.Error) as exc:
        return {**_check("live_accuracy", UNKNOWN, None, f"unknown: {exc}"),
                "model_version": version}
    own = scores.get(version, LiveScore())
    extra = {"model_version": version, "samples": own.samples,
             "by_version": {v: s.as_dict() for v, s in sorted(scores.items())}}
    others = sum(s.samples for v, s in scores.items() if v != version)
    note = f" ({others} samples of other versions not counted)" if others else ""
    live = own.accuracy
    if live is None or own.samples < t.live_min_samples:
        return {**_check("live_accuracy", UNKNOWN, None,
                         f"unknown: {own.samples} scored predictions of {version} "
                         f"(< {t.live_min_samples} needed){note}"), **extra}
    return {**_check("live_accuracy", _low(live, _f(t.live_accuracy_warn),
                                           _f(t.live_accuracy_crit)), round(live, 4),
                     f"{live:.3f} over {own.samples} predictions of {version}, "
                     f"one per bar{note}"), **extra}


def _service(url: str, expected_sha: str | None, timeout: float = 5.0) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/healthz", timeout=timeout) as resp:
            body = json.loads(resp.read().decode() or "{}")
    except urllib.error.HTTPError as exc:
        return _check("service", CRITICAL, exc.code, f"{url}/healthz answered {exc.code}")
    except (OSError, ValueError) as exc:
        return _check("service", CRITICAL, None, f"{url}/healthz unreachable: {exc}")
    sha = body.get("sha256")
    if expected_sha and sha != expected_sha:
        return _check("service", CRITICAL, sha, f"service runs {str(sha)[:12]}, "
                      f"the active model is {expected_sha[:12]}")
    return _check("service", OK, sha, f"healthy, serving {body.get('version')}")


def backups_check(store: ModelStore, t: Thresholds, ctx: RunContext | None = None
                  ) -> dict[str, Any]:
    """Intact backups (verified as a rollback would, ``backups.check``) against ``backups_min``.

    A backup that does not check out is WARNING, named with its reason; CRITICAL
    when backups exist and none is intact, as no rollback is possible then. No
    backup at all stays WARNING: that is a fresh install (its first promotion
    keeps nothing), told apart from a broken safety net by there being no files.
    """
    found = (ctx or RunContext(store.layout.root, store=store)).backups()
    intact = sum(c.intact for c in found)
    broken = [c for c in found if not c.intact]
    extra = {"backups": [c.as_dict() for c in found]}
    named = "; ".join(f"backup {c.version} does not check out: {c.reason}" for c in broken)
    if broken and not intact:
        return _check("backups", CRITICAL, 0, f"no intact backup to roll back to: {named}",
                      **extra)
    if not found:
        return _check("backups", WARNING if t.backups_min > 0 else OK, 0,
                      f"no backups yet (want {t.backups_min}): a first install has nothing "
                      "to roll back to until its next promotion", **extra)
    status = WARNING if broken or intact < t.backups_min else OK
    return _check("backups", status, intact,
                  f"{intact} intact backup{'' if intact == 1 else 's'} (want "
                  f"{t.backups_min})" + (f"; {named}" if named else ""), **extra)


def _model_checks(meta: dict[str, Any], t: Thresholds, now: dt.datetime, ctx: RunContext
                  ) -> list[dict[str, Any]]:
    """holdout_accuracy, age_days and live_accuracy of the active model's metadata."""
    checks: list[dict[str, Any]] = []
    acc = (meta.get("metrics") or {}).get("test_accuracy")
    if acc is None:
        checks.append(_check("holdout_accuracy", UNKNOWN, None, "not in metadata"))
    else:
        checks.append(_check("holdout_accuracy", _low(float(acc), _f(t.accuracy_warn),
                             _f(t.accuracy_crit)), float(acc),
                             f"{float(acc):.3f} (warn < {t.accuracy_warn}, "
                             f"critical < {t.accuracy_crit})"))
    trained = meta.get("trained_at")
    if trained:
        age = (now - dt.datetime.fromisoformat(str(trained))).total_seconds() / 86400
        status = (CRITICAL if age > t.age_crit_days else
                  WARNING if age > t.age_warn_days else OK)
        checks.append(_check("age_days", status, round(age, 2),
                             f"{age:.1f} days (warn > {t.age_warn_days:g}, "
                             f"critical > {t.age_crit_days:g})"))
    if ctx.source is not None:
        from quantshift_ml.monitoring.outcome_checks import live_outcomes_check

        checks.append(_live_check(meta, t, ctx))
        try:
            outcomes = ctx.ab_config().outcome_config()
        except QuantshiftError:
            outcomes = None  # ab.json's own problem is the ab_test check's to report
        checks.append(live_outcomes_check(ctx.root, meta, ctx.source, t, ctx.symbol, outcomes,
                                          ctx=ctx))
    return checks


def _integrity(ctx: RunContext, checks: list[dict[str, Any]]
               ) -> tuple[dict[str, Any] | None, bool]:
    """The ``integrity`` check (appended); the active metadata, and whether it is signed.

    Untrusted metadata still names the version and the labeler for the report, but
    the drift checks, which compare signed metadata only, are skipped for it.
    """
    store = ctx.store
    try:
        store.recover_if_interrupted()  # a half-done swap is finished, not reported as tampering
        active = ctx.active()
        checks.append(_check("integrity", OK, active.sha256, "sha256 matches metadata"))
        return active.meta, True
    except IntegrityError as exc:
        checks.append(_check("integrity", CRITICAL, None, str(exc)))
        try:
            art = store.active()
            return (art.meta if art else None), False
        except QuantshiftError:
            return None, False


def run_monitor(root: Path, *, thresholds: Thresholds | None = None,
                service_url: str | None = None, source: DataSource | None = None,
                now: dt.datetime | None = None, symbol: str | None = None
                ) -> dict[str, Any]:
    """Run every check and return the JSON-native report.

    ``symbol``: score only the service's predictions for that symbol (the one the
    monitor's data is for); ``None`` scores every symbol in the log. One
    ``RunContext`` reads the data, the labels, the log and the artifacts once for
    every check; the report's ``reads`` counts them.
    """
    t = thresholds or Thresholds()
    now = now or dt.datetime.now(dt.timezone.utc)
    store = ModelStore(root)
    ctx = RunContext(root, source, symbol, store)
    checks: list[dict[str, Any]] = []
    report: dict[str, Any] = {"host": socket.gethostname(), "root": str(root),
                              "time": now.isoformat(timespec="seconds"),
                              "thresholds": asdict(t)}
    if not store.layout.models.is_dir():
        report.update(status=UNKNOWN, checks=[_check(
            "store", UNKNOWN, None, f"{store.layout.models} does not exist")])
        return report

    meta, trusted = _integrity(ctx, checks)
    t = resolve(t, ((meta or {}).get("labeler") or {}).get("name"))
    report["thresholds"] = asdict(t)
    if meta is not None:
        checks += _model_checks(meta, t, now, ctx)
    if trusted and meta is not None:  # drift compares signed metadata only
        checks.append(drift_checks.importance_check(store, meta, t, ctx=ctx))
        if source is not None:
            from quantshift_ml.monitoring.ab_report import ab_check

            checks.append(drift_checks.input_check(meta, source, t, ctx=ctx))
            checks.append(ab_check(root, source, ctx=ctx))

    st = os.statvfs(store.layout.models)
    free = st.f_bavail / st.f_blocks if st.f_blocks else 0.0
    checks.append(_check("disk_free", _low(free, t.disk_warn_free, t.disk_crit_free),
                         round(free, 4), f"{free:.1%} free on the models' filesystem"))
    checks.append(backups_check(store, t, ctx))
    if service_url:
        checks.append(_service(service_url, (meta or {}).get("sha256")))
    combine_drift(checks)
    worst = max((c["status"] for c in checks), key=lambda s: RANK[s])
    report.update(status=worst, checks=checks, model_version=(meta or {}).get("version"),
                  reads=dict(sorted(ctx.reads.items())))
    return report


ACCURACY_SIGNALS = ("holdout_accuracy", "live_accuracy", "live_outcomes")
"""The checks whose failure turns strong input drift into a page."""


def combine_drift(checks: list[dict[str, Any]]) -> None:
    """Input drift pages only beside a failing accuracy signal (in place).

    Drift alone is evidence, at most WARNING (drift.py: on 2001-2018 it did not
    foretell the walk-forward's accuracy falls, docs/monitoring.md). It becomes
    CRITICAL when its share reached ``drift_crit_share`` *and* one of
    ``ACCURACY_SIGNALS`` is WARNING or CRITICAL: inputs unlike anything the model
    learned from, and answers that are already worse.
    """
    drift_check = next((c for c in checks if c["name"] == "input_drift"), None)
    if drift_check is None or drift_check["status"] != WARNING or not drift_check.get(
            "critical_level"):
        return
    failing = [c["name"] for c in checks
               if c["name"] in ACCURACY_SIGNALS and c["status"] in (WARNING, CRITICAL)]
    if failing:
        drift_check["status"] = CRITICAL
        drift_check["message"] += f"; CRITICAL with {', '.join(failing)} failing too"


def render_table(report: dict[str, Any]) -> str:
    lines = [f"{report['host']} {report['root']}: {report['status']}"]
    for c in report["checks"]:
        lines.append(f"  {c['status']:<8} {c['name']:<17} {c['message']}")
    return "\n".join(lines)


def write_outputs(report: dict[str, Any], root: Path, textfile_path: Path | None) -> Path:
    """Append to the daily log (30 days kept) and write the textfile atomically."""
    logs = Path(root) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    day = report["time"][:10].replace("-", "")
    path = logs / f"model-monitoring-{day}.log"
    append_text(path, f"{report['time']} {render_table(report)}\n")  # never through a link
    cutoff = (dt.datetime.strptime(day, "%Y%m%d") - dt.timedelta(days=LOG_DAYS_KEPT)).strftime(
        "%Y%m%d")
    for old in logs.glob("model-monitoring-*.log"):
        stamp = old.stem.rsplit("-", 1)[-1]
        if stamp.isdigit() and stamp < cutoff:
            old.unlink(missing_ok=True)
    if textfile_path is not None:
        atomic_write_bytes(Path(textfile_path), textfile(report).encode(), mode=0o644)
    return path


def alert_text(report: dict[str, Any]) -> tuple[str, str]:
    bad = [c for c in report["checks"] if c["status"] in (WARNING, CRITICAL)]
    subject = f"QuantShift monitor {report['status']} on {report['host']}"
    body = "\n".join(f"{c['status']} {c['name']}: {c['message']}" for c in bad)
    return subject, body
