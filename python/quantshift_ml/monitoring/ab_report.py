"""A/B results: both arms scored on what the market did, and the paired tests.

``outcomes``: both arms' answers on the same bars, judged on every outcome of
``quantshift_ml.outcomes`` (forward volatility, forward drawdown, the bot's
money, and the settled state, "the model's own target"), each with its paired
test and month-block interval. ``primary`` names the outcome that decides
(``quantshift_ab_primary_outcome``, default ``economic``); the report's
``p_value``, ``winner`` and ``verdict`` are that outcome's, and so is what the
fallback guard and the monitor's ``ab_test`` check act on. Judged on the settled
state alone the rule loses by construction: the model was trained to copy it.

* ``arms``: one sample per (symbol, bar, arm served, model version), the arm's
  served answer against the outcome: what the bots on that arm received.
* ``paired``: one sample per (symbol, bar, model version), both arms' answers
  (both are computed for every request) against the settled state: McNemar's
  test and the month-block bootstrap interval of the difference (ab_stats.py);
  the live floor of the fallback reads the model's accuracy from it.

The record pools the model versions served since the last automatic action
(``ab.GUARD_FILE``), each version's answers its own samples: the question is
"the model, as the fleet retrains it, against the rules", and with weekly
retrains and labels that settle 20 bars later no single version lives long
enough to be judged alone.

``replay`` produces the same report from history: a model trained on the data
before ``start`` (as training would have on that morning), then every trading
day of ``start..end`` requested by ``clients`` simulated bots, arms assigned as
the service assigns them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml import defaults
from quantshift_ml.insight.ab import AbConfig
from quantshift_ml.monitoring.context import RunContext
from quantshift_ml.monitoring.thresholds import ACCURACY_BY_LABELER
from quantshift_ml.outcomes.stats import ALPHA, Paired
from quantshift_ml.serving import predlog
from quantshift_ml.training.evaluate import classification_report

log = logging.getLogger(__name__)


def arm_metrics(truth: list[str], answers: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy and per-class recall of one arm on its samples."""
    if not truth:
        return {"samples": 0, "accuracy": None, "balanced_accuracy": None, "recall": {}}
    rep = classification_report(truth, answers)
    return {"samples": len(truth), "accuracy": rep["accuracy"],
            "balanced_accuracy": rep["balanced_accuracy"],
            "recall": {c: v["recall"] for c, v in rep["per_class"].items() if v["support"]}}


def build(arm_rows: Iterable[tuple[str, str, str]],
          paired_rows: Iterable[tuple[str, str, str, str]], alpha: float = ALPHA,
          market: pd.DataFrame | None = None, config: AbConfig | None = None
          ) -> dict[str, Any]:
    """The report from (arm, answer, truth) and (bar_date, ml, rules, truth) rows.

    ``market``: ``outcomes.forward_outcomes`` of the symbol's bars (None: only the
    settled state can be scored, and it decides).
    """
    per_arm: dict[str, tuple[list[str], list[str]]] = {"ml": ([], []), "rules": ([], [])}
    for arm, answer, truth in arm_rows:
        per_arm.setdefault(arm, ([], []))
        per_arm[arm][0].append(truth)
        per_arm[arm][1].append(answer)
    rows = list(paired_rows)
    paired = Paired(ml_right=np.asarray([r[1] == r[3] for r in rows], dtype=bool),
                    rules_right=np.asarray([r[2] == r[3] for r in rows], dtype=bool),
                    months=np.asarray([r[0][:7] for r in rows], dtype=object)).report(alpha)
    out = {"arms": {a: arm_metrics(t, p) for a, (t, p) in per_arm.items()},
           "paired": paired, "p_value": paired["p_value"], "winner": paired["winner"],
           "verdict": paired["verdict"], "primary": "settled_state", "outcomes": None}
    return {**out, **_outcomes(rows, market, config or AbConfig(), alpha)}


def _outcomes(rows: list[tuple[str, str, str, str]], market: pd.DataFrame | None,
              config: AbConfig, alpha: float) -> dict[str, Any]:
    """``outcomes``, ``primary`` and the primary outcome's p-value, winner and verdict."""
    from quantshift_ml.outcomes import compare_arms

    if market is None or not rows:
        return {}
    frame = market.reindex(pd.DatetimeIndex([r[0] for r in rows]))
    rep = compare_arms({"ml": [r[1] for r in rows], "rules": [r[2] for r in rows]}, frame,
                       [r[3] for r in rows], config.outcome_config(), config.primary, alpha)
    main = rep["outcomes"][config.primary]
    return {"outcomes": rep["outcomes"], "primary": config.primary,
            "outcome_config": rep["config"], "p_value": main["p_value"],
            "winner": main["winner"], "verdict": rep["verdict"]}


def from_log(root: Any, known: dict[str, str | None], since: str | None = None,
             symbol: str | None = None, alpha: float = ALPHA,
             market: pd.DataFrame | None = None, ctx: RunContext | None = None
             ) -> dict[str, Any]:
    """The report from the prediction log (``known``: settled labels; ``market``:
    forward outcomes of the bars), counting the predictions logged at or after
    ``since`` (ISO time; None: all). ``ctx``: the monitor run's log, read once."""
    ctx = ctx or RunContext(root)

    def recent(p: predlog.Prediction) -> bool:
        return (since is None or p.ts >= since) and (symbol is None or p.symbol == symbol)

    def keep(p: predlog.Prediction) -> bool:
        return recent(p) and known.get(p.bar_date) is not None

    arm_rows = [(s.prediction.arm, s.prediction.regime, str(known[s.prediction.bar_date]))
                for s in ctx.arm_samples() if keep(s.prediction)]
    logged = [s.prediction for s in ctx.samples()]
    paired = [(p.bar_date, p.model_regime, p.rules_regime, str(known[p.bar_date]))
              for p in logged if keep(p) and p.rules_regime]
    pending = sum(1 for p in logged if recent(p) and known.get(p.bar_date, "") is None)
    versions = sorted({p.model_version for p in logged if keep(p)})
    config = ctx.ab_config()
    return {**build(arm_rows, paired, alpha, market, config), "versions": versions,
            "since": since, "pending": pending}


def host_report(root: Any, src: Any, ctx: RunContext | None = None) -> dict[str, Any]:
    """The active version's report with the host's settings (CLI, monitor, playbooks).

    ``ctx``: the monitor run's, whose data, labels, log and verified artifacts the
    other checks read too; the CLI's ``ab report`` makes its own.
    """
    from quantshift_ml.insight.ab import acted_since

    ctx = ctx or RunContext(root, src)
    meta = ctx.active().meta
    version = str(meta.get("version"))
    labeler = meta.get("labeler") or {}
    config = ctx.ab_config()
    out = from_log(root, ctx.realised(labeler), acted_since(root),
                   market=ctx.forward_outcomes(config.outcome_config()), ctx=ctx)
    older = [b for b in ctx.trusted_backups() if str(b.meta.get("version")) < version]
    return {**out, "model_version": version, "labeler": labeler.get("name"),
            "config": config.as_dict(), "trusted_older_backups": len(older)}


def ab_check(root: Any, src: Any, ctx: RunContext | None = None) -> dict[str, Any]:
    """The monitor's ``ab_test`` check: CRITICAL when the model is significantly worse
    than the rules on the same bars, UNKNOWN while A/B is off or nothing is settled."""
    import sqlite3

    from quantshift_ml.errors import QuantshiftError
    from quantshift_ml.monitoring.checks import check

    try:
        ctx = ctx or RunContext(root, src)
        config = ctx.ab_config()
        if not config.enabled and config.forced is None:
            return check("ab_test", "UNKNOWN", None, "unknown: A/B testing is off")
        rep = host_report(root, src, ctx)
    except (QuantshiftError, sqlite3.Error, OSError, ValueError) as exc:
        return check("ab_test", "UNKNOWN", None, f"unknown: {exc}")
    forced = f" (serving {config.forced} only: {config.reason})" if config.forced else ""
    status = ("UNKNOWN" if not rep["paired"]["samples"] else
              "CRITICAL" if rep["winner"] == "rules" else "OK")
    return check("ab_test", status, rep["p_value"], rep["verdict"] + forced, ab=rep)


def replay(bars: pd.DataFrame, start: str, end: str, *, clients: int = 20,
           split: float = 0.5, symbol: str = defaults.SYMBOL, config: Any = None,
           ab_config: AbConfig | None = None) -> dict[str, Any]:
    """The report over ``start..end`` of ``bars``, as the service would have produced it."""
    from quantshift_ml.insight.ab import rules_regime
    from quantshift_ml.model.features import model_frame, usable
    from quantshift_ml.model.labels import make_labeler
    from quantshift_ml.outcomes import forward_outcomes
    from quantshift_ml.training.config import TrainConfig
    from quantshift_ml.training.model import predict
    from quantshift_ml.training.pipeline import train_candidate

    config = config or TrainConfig()
    first = _replay_start(bars, start, end, config)
    as_of = str(bars.loc[:first - pd.Timedelta(days=1)].index[-1].date())
    result = train_candidate(bars, config, as_of=as_of)
    frame = model_frame(bars, result.labeler)
    frame = frame[usable(frame[result.bundle["features"]])].loc[first:end]
    ml = predict(result.bundle, frame)
    rules = [rules_regime(a, s) for a, s in zip(frame["atr_ratio"], frame["sma50_slope"],
                                                strict=True)]
    lab = make_labeler(result.labeler["name"], **{
        k: v for k, v in result.labeler["params"].items() if k != "name"})
    truth = lab.label(bars, model_frame(bars, None)).reindex(frame.index)
    settings = ab_config or AbConfig()
    ab = AbConfig(enabled=True, split=split, primary=settings.primary,
                  outcomes=settings.outcomes)
    arm_rows, paired = _served_rows(frame.index, ml, rules, truth, ab, clients, symbol)
    market = forward_outcomes(bars["Close"], ab.outcome_config())
    return {**build(arm_rows, paired, market=market, config=ab), "replay": {
        "from": str(frame.index[0].date()), "to": str(frame.index[-1].date()),
        "clients": clients, "split": split, "model_as_of": as_of,
        "labeler": result.labeler["name"], "requested_from": start,
        "moved": first != pd.Timestamp(start)}}


def _replay_start(bars: pd.DataFrame, start: str, end: str, config: Any) -> pd.Timestamp:
    """``--from`` checked, or moved to the first bar with a full training window before
    it (UsageError when ``--to`` comes before that bar, or the dates are bad)."""
    from quantshift_ml.errors import UsageError

    try:
        first, last = pd.Timestamp(start), pd.Timestamp(end)
    except ValueError as exc:
        raise UsageError(f"--from/--to must be dates YYYY-MM-DD: {exc}") from exc
    if first > last:
        raise UsageError(f"--from {start} is after --to {end}")
    if bars.loc[first:last].empty:
        raise UsageError(f"no bars between {start} and {end}: the data end "
                         f"{pd.DatetimeIndex(bars.index)[-1].date()}")
    earliest = earliest_replay_start(bars, config)
    if earliest is None or earliest > last:
        when = ("these data never hold one" if earliest is None
                else f"the first is {earliest.date()}")
        raise UsageError(f"--from {start} --to {end}: the replay's model trains on a full "
                         f"window of bars before --from, and {when}; give a longer history "
                         "or a later --to")
    if first < earliest:
        log.warning("ab replay: --from %s moved to %s, the first bar with a full training "
                    "window before it (the model never sees the bars it is judged on)",
                    start, earliest.date())
        return earliest
    return first


def _served_rows(days: pd.Index, ml: Any, rules: list[str], truth: pd.Series,
                 ab: AbConfig, clients: int, symbol: str
                 ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str, str]]]:
    """One sample per arm served each settled day (as the service assigns ``clients``
    bots), and the paired (day, ml, rules, truth) rows."""
    arm_rows, paired = [], []
    for day, m, r, t in zip(days, ml, rules, truth, strict=True):
        if not isinstance(t, str):
            continue  # outcome not settled by the end of the data
        d = str(day.date())
        served = {ab.assign(f"bot-{c}", symbol, d) for c in range(clients)}
        arm_rows += [(arm, m if arm == "ml" else r, t) for arm in sorted(served)]
        paired.append((d, str(m), r, t))
    return arm_rows, paired


def earliest_replay_start(bars: pd.DataFrame, config: Any) -> pd.Timestamp | None:
    """The first bar whose predecessors hold a full training window, or None.

    Why: the replay trains once on the bars before ``--from`` (never on the bars
    it scores), so a ``--from`` near the start of the data has no model; the
    replay then starts at this bar and says so rather than refusing a whole span.
    A bisection over positions (having enough history is monotone in the cut-off).
    """
    from quantshift_ml.errors import DataError
    from quantshift_ml.training.pipeline import check_history

    idx = pd.DatetimeIndex(bars.index)

    def trainable(pos: int) -> bool:
        try:
            check_history(bars, config, as_of=str(idx[pos - 1].date()))
        except DataError:
            return False
        return True

    lo, hi = 1, len(idx) - 1
    if hi < lo or not trainable(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if trainable(mid):
            hi = mid
        else:
            lo = mid + 1
    return idx[lo]


def live_floor(labeler: str | None, min_accuracy: float | None) -> float:
    """The accuracy below which the fallback acts: ``quantshift_min_accuracy`` when set,
    else the monitor's critical live accuracy for the labeler (``hmm`` 0.55, ``rules``
    0.75): the fixed 0.75 would fire in ordinary months of the ``hmm`` target."""
    if min_accuracy is not None:
        return float(min_accuracy)
    return ACCURACY_BY_LABELER.get(labeler or "rules", ACCURACY_BY_LABELER["rules"])[1]


def fallback_decision(reports: dict[str, dict[str, Any] | None],
                      min_accuracy: float | None = None, min_samples: int = 20
                      ) -> dict[str, Any]:
    """What the automatic fallback does with the hosts' ``ab report``s (ab_guard.yml).

    A host triggers it when the model's live accuracy (its answers on every settled
    bar since the last action, served or not) is below ``live_floor`` on at least
    ``min_samples`` bars, or when the rules are significantly better on the same
    bars. The fleet then rolls back (the existing, validated path) when every host
    has a trusted backup older than its active model; otherwise it serves the
    rules arm, unless the model is significantly better than the rules somewhere
    (then nothing is switched: the alert says why). It never acts twice on the same
    evidence: every action is recorded (``ab.GUARD_FILE``) and only predictions
    logged after it count, and a host already forced to the rules is skipped.
    """
    reasons, evidence, ml_better = [], [], False
    for host, rep in sorted(reports.items()):
        if not rep or "paired" not in rep or (rep.get("config") or {}).get("forced") == "rules":
            continue
        n = rep["paired"]["samples"]
        ml_acc = (rep["paired"]["both_right"] + rep["paired"]["ml_only"]) / n if n else None
        floor = live_floor(rep.get("labeler"), min_accuracy)
        ml_better |= rep.get("winner") == "ml"
        if ml_acc is not None and n >= min_samples and ml_acc < floor:
            reasons.append(f"{host}: model accuracy {ml_acc:.3f} < {floor:g} on {n} "
                           f"settled bars since {rep.get('since') or 'the start'}")
        elif rep.get("winner") == "rules":
            reasons.append(f"{host}: {rep['verdict']}")
        else:
            continue
        evidence.append(f"{host}:{rep.get('model_version')}:{n}")
    if not reasons:
        return {"action": "none", "reasons": [], "evidence": ""}
    known = [r for r in reports.values() if r and "paired" in r]
    if bool(known) and all(r.get("trusted_older_backups", 0) > 0 for r in known):
        action = "rollback"
    elif ml_better:
        action = "none"
        reasons.append("no rollback target, and the model is significantly better than the "
                       "rules on some host: not switching to the rules")
    else:
        action = "serve-rules"
    return {"action": action, "reasons": reasons, "evidence": ",".join(evidence)}
