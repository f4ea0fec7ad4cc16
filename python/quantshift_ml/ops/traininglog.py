"""Training logs the old runbook greps (``Test Accuracy: 0.917``), last N kept."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from quantshift_ml.store.files import atomic_write_bytes
from quantshift_ml.store.layout import Layout

DEFAULT_KEEP_LOGS = 10


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def render(meta: dict[str, Any]) -> str:
    m = meta["metrics"]
    lines = [
        f"QuantShift regime model training {meta['version']} on {meta.get('host', '?')}",
        f"Trained at: {meta.get('trained_at')}",
        f"Data: {meta['data'].get('source')} {meta['data'].get('symbol')} "
        f"window {meta['data'].get('window_start')}..{meta['data'].get('last_bar')}",
        f"Labeler: {meta['labeler']['name']} (horizon {meta['labeler']['horizon']})",
        *_champion_lines(meta),
        f"Train rows: {m['train_rows']} (+{m['stress_memory_rows']} "
        f"{m.get('memory', 'stress')} memory), "
        f"embargo {m['gap_rows']}, holdout {m['holdout_rows']}",
        f"Test Accuracy: {_fmt(m['test_accuracy'])}",
        f"CV Accuracy: {_fmt(m['cv_accuracy'])}",
        f"Balanced Accuracy: {_fmt(m['balanced_accuracy'])}",
        "Features: " + ", ".join(f"{f['feature']} ({f['importance']:.3f})"
                                 for f in m["top_features"]),
        "Recall: " + ", ".join(f"{c} {_fmt(v['recall'])} (n={v['support']})"
                               for c, v in m["per_class"].items()),
        "Baselines: " + ", ".join(f"{k} {_fmt(v['accuracy'])}"
                                  for k, v in meta["baselines"].items()),
        "Baselines Balanced: " + ", ".join(f"{k} {_fmt(v['balanced_accuracy'])}"
                                           for k, v in meta["baselines"].items()),
    ]
    axis = m.get("learned_axis")
    if axis:
        lines.append(f"Learned Axis ({axis['target']}): accuracy {_fmt(axis['accuracy'])}, "
                     f"balanced {_fmt(axis['balanced_accuracy'])}")
    lines += _importance_lines(meta)
    inc = meta.get("incumbent")
    if inc and "error" not in inc:
        lines.append(f"Incumbent Accuracy: {_fmt(inc['accuracy'])}")
    lines.append(f"Gate: {meta['gate']['summary']}")
    lines.append(f"sha256: {meta.get('sha256', '-')}")
    return "\n".join(lines) + "\n"


def _champion_lines(meta: dict[str, Any]) -> list[str]:
    """``Family`` (the record's champion, and why) and ``Record`` (each family's score)."""
    c = meta.get("champion")
    lines = [f"Family: {meta.get('family') or 'forest'}"
             + (f" ({c['reason']})" if c else "")]
    if c and c.get("scores"):
        lines.append(f"Record: {c['settled_rows']} settled rows, {c['record_months']} months "
                     f"({c['refitted_months']} refitted, {c['reused_months']} reused): "
                     + ", ".join(f"{f} {_fmt(s['balanced_accuracy'])} "
                                 f"[{_fmt(s['ci95'][0])}..{_fmt(s['ci95'][1])}]"
                                 for f, s in c["scores"].items() if s.get("ci95")))
    return lines


def _importance_lines(meta: dict[str, Any]) -> list[str]:
    """``Importance`` (mean |SHAP| on the holdout) and ``Importance Drift`` lines."""
    imp = meta.get("importance") or {}
    if "mean_abs" not in imp:
        why = imp.get("error") or ("a filter family has no SHAP importances"
                                   if meta.get("family") not in (None, "forest")
                                   else "not recorded")
        return [f"Importance: n/a ({why})"]
    top = sorted(imp["mean_abs"].items(), key=lambda kv: -kv[1])[:5]
    lines = ["Importance (mean |SHAP|): " + ", ".join(f"{f} {v:.3f}" for f, v in top)]
    d = meta.get("importance_drift")
    if not d:
        lines.append("Importance Drift: n/a (no production model with importances to compare)")
    else:
        moved = "".join((f"; entered top 5: {', '.join(d['entered'])}" if d["entered"] else "",
                         f"; left top 5: {', '.join(d['left'])}" if d["left"] else ""))
        lines.append(f"Importance Drift: rank correlation {_fmt(d['spearman'])} vs "
                     f"{d['previous']}{moved}")
    return lines


def write(layout: Layout, meta: dict[str, Any], keep: int = DEFAULT_KEEP_LOGS) -> Path:
    path = layout.training_log(meta["version"])
    atomic_write_bytes(path, render(meta).encode(), mode=0o644)
    prune(layout.logs, keep)
    return path


def prune(logs: Path, keep: int) -> list[str]:
    files = sorted(logs.glob("model-training-*.log"))
    removed = []
    for f in files[: max(0, len(files) - keep)]:
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
        removed.append(f.name)
    return removed
