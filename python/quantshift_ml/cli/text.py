"""Human-readable renderings of the CLI's results (``--json`` prints the dicts as they are)."""

from __future__ import annotations

import json
from typing import Any

from quantshift_ml.cli import ab as cli_ab
from quantshift_ml.cli.insight import render_drift, render_explain


def _train(result: dict[str, Any]) -> str:
    m, g = result["metrics"], result["gate"]
    lines = [f"version {result['version']}",
             f"Family: {result.get('family', 'forest')}"
             + (f" ({result['champion']['reason']})" if result.get("champion") else ""),
             f"Test Accuracy: {m['test_accuracy']:.3f}",
             "CV Accuracy: " + ("n/a" if m["cv_accuracy"] is None
                                else f"{m['cv_accuracy']:.3f}"),
             f"Balanced Accuracy: {m['balanced_accuracy']:.3f}",
             "Baselines: " + ", ".join(f"{k} {v['balanced_accuracy']:.3f}"
                                       for k, v in result["baselines"].items()),
             "Features: " + (", ".join(f["feature"] for f in m["top_features"]) or "n/a"),
             g["summary"]]
    if result.get("promoted"):
        lines.append(f"promoted {result['current']['version']} ({result['sha256'][:12]})")
    elif result.get("artifact"):
        lines.append(f"staged {result['artifact']}")
    return "\n".join(lines)


def _status(result: dict[str, Any]) -> str:
    act = result["active"]
    if act is None:
        head = f"{result['root']}: no active model"
    else:
        file_sha = str(act.get("file_sha256") or "missing")[:12]
        head = (f"{result['root']}: {act['version']} sha {str(act['sha256'])[:12]} "
                f"(file {file_sha}) age {act['age_days']} d test accuracy "
                f"{act['test_accuracy']} integrity {act['integrity']}")
    return head + "\nbackups: " + (", ".join(
        b["version"] + ("" if b["intact"] else " (NOT INTACT)") for b in result["backups"])
        or "none")


def _backups(result: dict[str, Any]) -> str:
    """One line per backup, oldest first: intact (a rollback would take it) or why not."""
    rows = []
    for b in result["backups"]:
        if b["intact"]:
            acc = b["test_accuracy"]
            rows.append(f"{b['version']}  intact      sha {str(b['sha256'])[:12]}  test "
                        f"accuracy {'n/a' if acc is None else f'{acc:.3f}'}")
        else:
            rows.append(f"{b['version']}  NOT INTACT  {b['reason']}")
    return "\n".join(rows) or "no backups"


def _walkforward(result: dict[str, Any]) -> str:
    if "markets" in result:
        return universe_text(result)
    m = result["model"]
    rows = [f"walk-forward {result['first_month']}..{result['last_month']} "
            f"({result['months']} monthly retrains, labeler {result['labeler']['name']})",
            f"{'':18}{'accuracy':>9}{'balanced':>9}",
            f"{'model':18}{m['accuracy']:9.3f}{m['balanced_accuracy']:9.3f}"]
    for k, v in result["baselines"].items():
        rows.append(f"{k:18}{v['accuracy']:9.3f}{v['balanced_accuracy']:9.3f}")
    rows.append("recall: " + ", ".join(f"{c} {v['recall']}" for c, v in
                                       m["per_class"].items()))
    sb = result["strongest_baseline"]
    rows.append(f"margin over the strongest baseline ({sb['name']}): {sb['margin']:+.3f} "
                f"balanced, 95 % interval {sb['ci95'][0]:+.3f}..{sb['ci95'][1]:+.3f}")
    for name, half in result["halves"].items():
        rows.append(f"  {name}: {half['margin_vs_strongest']['margin']:+.3f}")
    rows.append(f"gate pass rate: {result['gate_pass_rate']:.1%}")
    return "\n".join(rows)


def _champion(result: dict[str, Any]) -> str:
    """The family, why, and each family's record score with its interval."""
    head = f"{result['version']}: family {result['family']}"
    if result.get("chosen_on") is None:
        return f"{head}\n{result['reason']}"
    rec = result["record"]
    rows = [head + f", chosen on {result['chosen_on']} (switch margin "
                   f"{result['switch_margin']:g})",
            result["reason"],
            f"record: {rec['rows']} rows, {result['settled_rows']} settled, "
            f"{len(rec['months'])} months ({rec['first_date']}..{rec['last_date']})",
            f"{'family':18}{'balanced':>9}  95 % interval (month blocks)"]
    for name, s in result["scores"].items():
        value, ci = s.get("balanced_accuracy"), s.get("ci95")
        rows.append(f"{name:18}{'n/a' if value is None else f'{value:.4f}':>9}  "
                    + (f"{ci[0]:.4f}..{ci[1]:.4f}" if ci else "n/a"))
    return "\n".join(rows + _live_rows(result.get("live")))


def _live_rows(live: dict[str, Any] | None) -> list[str]:
    """The live record: each family on its settled samples, its margin over the champions'."""
    if live is None:
        return []
    if "error" in live or not live.get("settled"):
        return [f"live: {live.get('error') or live.get('reason')}"]
    rows = [f"live: {live['settled']} settled samples (one per symbol, bar and release), "
            f"{live['pending']} waiting, {live['not_in_data']} not in the data; "
            f"{live['first_bar']}..{live['last_bar']}, releases {', '.join(live['versions'])}",
            f"{'family':18}{'samples':>8}{'balanced':>9}  margin over the champions', "
            "95 % interval"]
    for name, f in live["families"].items():
        vs = f["vs_champion"]
        margin = ("n/a (" + vs["reason"] + ")" if vs.get("margin") is None else
                  f"{vs['margin']:+.4f} ({vs['ci95'][0]:+.4f}..{vs['ci95'][1]:+.4f})")
        rows.append(f"{name:18}{f['samples']:>8}{f['balanced_accuracy']:>9.4f}  {margin}")
    return rows


def universe_text(result: dict[str, Any]) -> str:
    """``walkforward --universe``: one line per market, then the pooled margin."""
    fams = list(result["markets"][0]["families"])
    rows = [f"{'market':12}{'months':>7}{'model':>7}  {'strongest baseline':<17}{'bal':>6}"
            f"{'margin':>8}{'95 % interval':>17}{'champion':>9}{'Sharpe':>7}"
            + "".join(f"{f:>17}" for f in fams)]
    for m in result["markets"]:
        sb = m["strongest_baseline"]
        rows.append(f"{m['name'][:12]:12}{m['months']:7d}{m['model_balanced_accuracy']:7.3f}  "
                    f"{sb['name'][:17]:<17}{sb['balanced_accuracy']:6.3f}{sb['margin']:+8.3f}"
                    f"{sb['ci95'][0]:+9.3f}..{sb['ci95'][1]:+.3f}"
                    f"{m['champion']['balanced_accuracy']:9.3f}{m['champion']['sharpe']:7.3f}"
                    + "".join(f"{m['families'][f]['balanced_accuracy']:10.3f}/"
                              f"{m['families'][f]['sharpe']:6.3f}" for f in fams))
    p = result["pooled_margin_vs_strongest"]
    rows.append(f"pooled margin over each market's strongest baseline: {p['margin']:+.3f} "
                f"balanced, 95 % interval {p['ci95'][0]:+.3f}..{p['ci95'][1]:+.3f} "
                f"({p['markets_above_0']} of {p['markets']} markets above 0)")
    rows.append("families: balanced / Sharpe; pooled: " + p["method"])
    return "\n".join(rows)


def _freeze(result: dict[str, Any]) -> str:
    if "frozen_runs" in result:
        runs = result["frozen_runs"]
        return (f"schedule {result['schedule']}: no run in the next {result['days']} days is "
                "frozen" if not runs else f"schedule {result['schedule']}: {len(runs)} runs "
                f"frozen, first {runs[0]['at']} ({runs[0]['reason']})")
    if not result["frozen"]:
        return f"{result['at']}: not frozen" + (f" ({result['reason']})"
                                                if result["reason"] else "")
    return f"{result['at']}: FROZEN until {result['until']}: {result['reason']}"


def _verify(result: dict[str, Any]) -> str:
    return "\n".join(f"{c['state']:7} {c['file']}" + (f" {c['version']} {c['sha256'][:12]}"
                      if c["state"] == "ok" else f": {c['error']}")
                      for c in result["verified"])


def human(cmd: str, result: dict[str, Any]) -> str:
    """The command's result as text; commands without a renderer print their JSON."""
    from quantshift_ml.monitoring.monitor import (
        render_table,  # pandas: only when rendering a report
    )

    renderers = {"monitor": render_table, "train": _train, "status": _status,
                 "backups": _backups, "walkforward": _walkforward, "doctor": doctor_text,
                 "freeze": _freeze, "verify": _verify, "champion": _champion,
                 "explain": render_explain,
                 "drift": render_drift,
                 "ab": lambda r: cli_ab.render(r) if "arms" in r else json.dumps(r, indent=2)}
    render = renderers.get(cmd)
    return render(result) if render else json.dumps(result, indent=2, sort_keys=True)


def doctor_text(result: dict[str, Any]) -> str:
    act = result["active"]
    lines = [f"{result['root']}: active {act['state']}"
             + (f" ({act['version']})" if act.get("version") else ""),
             "backups: " + (", ".join(b["version"] for b in result["backups"]) or "none"),
             *[f"repaired: {r}" for r in result.get("repaired", [])]]
    if result["healthy"]:
        lines.append("healthy: nothing to do")
    for p in result["problems"]:
        lines += [f"PROBLEM: {p['problem']}", f"    fix: {p['fix']}"]
    return "\n".join(lines)
