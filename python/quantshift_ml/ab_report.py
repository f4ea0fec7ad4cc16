"""A/B results: each arm scored on realised outcomes, and the paired test.

Outcomes are the model's own labeler's labels once settled (``hmm``: the HMM
refitted on the data, smoothed, bars at least 20 bars old; the same as the
monitor's live accuracy), so both arms are judged against the target the model
was built for, on the same bars.

* ``arms``: one sample per (symbol, bar, arm served, model version), the arm's
  served answer against the outcome: what the bots on that arm received.
* ``paired``: one sample per (symbol, bar, model version), both arms' answers
  (both are computed for every request) against the same outcome: McNemar's
  test and the month-block bootstrap interval of the difference (ab_stats.py).

``replay`` produces the same report from history: a model trained on the data
before ``start`` (as training would have on that morning), then every trading
day of ``start..end`` requested by ``clients`` simulated bots, arms assigned as
the service assigns them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from quantshift_ml import predlog
from quantshift_ml.ab import AbConfig
from quantshift_ml.ab_stats import ALPHA, Paired
from quantshift_ml.training.evaluate import classification_report


def arm_metrics(truth: list[str], answers: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy and per-class recall of one arm on its samples."""
    if not truth:
        return {"samples": 0, "accuracy": None, "balanced_accuracy": None, "recall": {}}
    rep = classification_report(truth, answers)
    return {"samples": len(truth), "accuracy": rep["accuracy"],
            "balanced_accuracy": rep["balanced_accuracy"],
            "recall": {c: v["recall"] for c, v in rep["per_class"].items() if v["support"]}}


def build(arm_rows: Iterable[tuple[str, str, str]],
          paired_rows: Iterable[tuple[str, str, str, str]], alpha: float = ALPHA
          ) -> dict[str, Any]:
    """The report from (arm, answer, truth) and (bar_date, ml, rules, truth) rows."""
    per_arm: dict[str, tuple[list[str], list[str]]] = {"ml": ([], []), "rules": ([], [])}
    for arm, answer, truth in arm_rows:
        per_arm.setdefault(arm, ([], []))
        per_arm[arm][0].append(truth)
        per_arm[arm][1].append(answer)
    rows = list(paired_rows)
    paired = Paired(ml_right=np.asarray([r[1] == r[3] for r in rows], dtype=bool),
                    rules_right=np.asarray([r[2] == r[3] for r in rows], dtype=bool),
                    months=np.asarray([r[0][:7] for r in rows], dtype=object)).report(alpha)
    return {"arms": {a: arm_metrics(t, p) for a, (t, p) in per_arm.items()},
            "paired": paired, "p_value": paired["p_value"], "winner": paired["winner"],
            "verdict": paired["verdict"]}


def from_log(root: Any, known: dict[str, str | None], version: str,
             symbol: str | None = None, alpha: float = ALPHA) -> dict[str, Any]:
    """The active version's report from the prediction log (``known``: settled labels)."""

    def keep(p: predlog.Prediction) -> bool:
        return (p.model_version == version and (symbol is None or p.symbol == symbol)
                and known.get(p.bar_date) is not None)

    arm_rows = [(s.prediction.arm, s.prediction.regime, str(known[s.prediction.bar_date]))
                for s in predlog.arm_samples(root) if keep(s.prediction)]
    paired = [(p.bar_date, p.model_regime, p.rules_regime, str(known[p.bar_date]))
              for p in (s.prediction for s in predlog.samples(root))
              if keep(p) and p.rules_regime]
    pending = sum(1 for s in predlog.samples(root) if s.prediction.model_version == version
                  and known.get(s.prediction.bar_date, "") is None)
    return {**build(arm_rows, paired, alpha), "model_version": version, "pending": pending}


def host_report(root: Any, src: Any) -> dict[str, Any]:
    """The active version's report with the host's settings (CLI, monitor, playbooks)."""
    from quantshift_ml.monitor import realised
    from quantshift_ml.store import ModelStore

    store = ModelStore(root)
    meta = store.verify(store.layout.active_pkl).meta
    version = str(meta.get("version"))
    out = from_log(root, realised(meta.get("labeler") or {}, src), version)
    older = [b for b in store.trusted_backups() if str(b.meta.get("version")) < version]
    return {**out, "config": AbConfig.load(root).as_dict(), "trusted_older_backups": len(older)}


def ab_check(root: Any, src: Any) -> dict[str, Any]:
    """The monitor's ``ab_test`` check: CRITICAL when the model is significantly worse
    than the rules on the same bars, UNKNOWN while A/B is off or nothing is settled."""
    from quantshift_ml.checks import check

    config = AbConfig.load(root)
    if not config.enabled and config.forced is None:
        return check("ab_test", "UNKNOWN", None, "unknown: A/B testing is off")
    rep = host_report(root, src)
    forced = f" (serving {config.forced} only: {config.reason})" if config.forced else ""
    status = ("UNKNOWN" if not rep["paired"]["samples"] else
              "CRITICAL" if rep["winner"] == "rules" else "OK")
    return check("ab_test", status, rep["p_value"], rep["verdict"] + forced, ab=rep)


def replay(bars: pd.DataFrame, start: str, end: str, *, clients: int = 20,
           split: float = 0.5, symbol: str = "SPY", config: Any = None) -> dict[str, Any]:
    """The report over ``start..end`` of ``bars``, as the service would have produced it."""
    from quantshift_ml.ab import rules_regime
    from quantshift_ml.features import model_frame, usable
    from quantshift_ml.labels import make_labeler
    from quantshift_ml.training.config import TrainConfig
    from quantshift_ml.training.model import predict
    from quantshift_ml.training.pipeline import train_candidate

    before = bars.loc[:pd.Timestamp(start) - pd.Timedelta(days=1)]
    if before.empty:
        from quantshift_ml.errors import UsageError

        raise UsageError(f"--from {start}: no data before it to train the model on")
    as_of = str(before.index[-1].date())
    result = train_candidate(bars, config or TrainConfig(), as_of=as_of)
    frame = model_frame(bars, result.labeler)
    frame = frame[usable(frame[result.bundle["features"]])].loc[start:end]
    ml = predict(result.bundle, frame)
    rules = [rules_regime(a, s) for a, s in zip(frame["atr_ratio"], frame["sma50_slope"],
                                                strict=True)]
    lab = make_labeler(result.labeler["name"], **{
        k: v for k, v in result.labeler["params"].items() if k != "name"})
    truth = lab.label(bars, model_frame(bars, None)).reindex(frame.index)
    ab = AbConfig(enabled=True, split=split)
    arm_rows, paired = [], []
    for day, m, r, t in zip(frame.index, ml, rules, truth, strict=True):
        if not isinstance(t, str):
            continue  # outcome not settled by the end of the data
        d = str(day.date())
        served = {ab.assign(f"bot-{c}", symbol, d) for c in range(clients)}
        arm_rows += [(arm, m if arm == "ml" else r, t) for arm in sorted(served)]
        paired.append((d, str(m), r, t))
    return {**build(arm_rows, paired), "replay": {
        "from": str(frame.index[0].date()), "to": str(frame.index[-1].date()),
        "clients": clients, "split": split, "model_as_of": as_of,
        "labeler": result.labeler["name"]}}


def gauges(check: dict[str, Any] | None, lab: str) -> list[str]:
    """Prometheus lines of the ``ab_test`` check: accuracy and samples per arm, p-value."""
    rep = (check or {}).get("ab")
    if not rep:
        return []
    out = ["# HELP quantshift_ab_accuracy Accuracy of each A/B arm on its settled samples",
           "# TYPE quantshift_ab_accuracy gauge"]
    out += [f'quantshift_ab_accuracy{{{lab},arm="{arm}"}} {m["accuracy"]:g}'
            for arm, m in rep["arms"].items() if m["accuracy"] is not None]
    out += ["# HELP quantshift_ab_samples Settled samples of each A/B arm",
            "# TYPE quantshift_ab_samples gauge"]
    out += [f'quantshift_ab_samples{{{lab},arm="{arm}"}} {m["samples"]}'
            for arm, m in rep["arms"].items()]
    if rep.get("p_value") is not None:
        out += ["# HELP quantshift_ab_p_value McNemar p-value of ml against rules, same bars",
                "# TYPE quantshift_ab_p_value gauge", f"quantshift_ab_p_value{{{lab}}} "
                f"{rep['p_value']:g}"]
    return out


def fallback_decision(reports: dict[str, dict[str, Any] | None], min_accuracy: float = 0.75,
                      min_samples: int = 20) -> dict[str, Any]:
    """What the automatic fallback does with the hosts' ``ab report``s (ab_guard.yml).

    A host triggers it when the model's live accuracy (its answers on every settled
    bar of the active version, served or not) is below ``min_accuracy`` on at least
    ``min_samples`` bars, or when the rules are significantly better on the same
    bars. The fleet then rolls back (the existing, validated path) when every host
    has a trusted backup older than its active model, otherwise serves the rules
    arm. It never acts twice on the same evidence: a rollback changes the active
    version, whose samples start from zero, and a host already forced to the rules
    is not counted again.
    """
    reasons, evidence = [], []
    for host, rep in sorted(reports.items()):
        if not rep or "paired" not in rep or (rep.get("config") or {}).get("forced") == "rules":
            continue
        n = rep["paired"]["samples"]
        ml_acc = (rep["paired"]["both_right"] + rep["paired"]["ml_only"]) / n if n else None
        if ml_acc is not None and n >= min_samples and ml_acc < min_accuracy:
            reasons.append(f"{host}: model accuracy {ml_acc:.3f} < {min_accuracy:g} on {n} "
                           f"settled bars of {rep['model_version']}")
        elif rep.get("winner") == "rules":
            reasons.append(f"{host}: {rep['verdict']}")
        else:
            continue
        evidence.append(f"{host}:{rep['model_version']}:{n}")
    if not reasons:
        return {"action": "none", "reasons": [], "evidence": ""}
    known = [r for r in reports.values() if r and "paired" in r]
    can_roll = bool(known) and all(r.get("trusted_older_backups", 0) > 0 for r in known)
    return {"action": "rollback" if can_roll else "serve-rules", "reasons": reasons,
            "evidence": ",".join(evidence)}
