"""``quantshift-ml``: the command line other parts of the product and users rely on.

Exit codes: 0 ok, 1 anything else, 2 bad input or usage, 3 the gate refused the
candidate (``train``, with or without ``--promote``: nothing is promoted),
4 integrity failure (unsigned or forged model, sha mismatch, lock held; ``status``,
``verify`` and ``doctor`` exit 4 when they find one), 5 change freeze (``train
--promote`` and ``promote`` refused inside one; ``freeze`` when the time, or a
run of ``--schedule``, is frozen). ``monitor`` and ``drift`` use Nagios plugin
codes instead: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. With ``--json`` exactly one
JSON object is printed on stdout: ``ok`` is false exactly when the exit code is not
0, ``exit_code`` repeats it, and for ``train`` ``gate.passed`` is the decision.
Logs always go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quantshift_ml import __version__, cli_ab, defaults
from quantshift_ml import cli_commands as commands
from quantshift_ml import cli_insight as insight
from quantshift_ml.alerts import KINDS, AlertConfig, notify, read_env_file
from quantshift_ml.alerts import exit_code as alert_exit_code
from quantshift_ml.checks import EXIT
from quantshift_ml.cli_text import human
from quantshift_ml.data.sources import make_source
from quantshift_ml.errors import GateRefused, IntegrityError, QuantshiftError, UsageError
from quantshift_ml.gate import BASELINE_CHOICES, GATE_METRICS, GateConfig, gate_for
from quantshift_ml.labels import DEFAULT_LABELER, LABELERS
from quantshift_ml.monitor import (
    alert_text,
    run_monitor,
    write_outputs,
)
from quantshift_ml.store import ModelStore, default_root, signing
from quantshift_ml.training.config import ESTIMATORS, MEMORIES, TrainConfig, model_params

log = logging.getLogger("quantshift_ml")
EXIT_CODES = __doc__.split("\n\n")[1] if __doc__ else ""
"""The exit-code contract, printed by --help exactly as documented above."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors get exit code 2 and JSON."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=None,
                   help="store root (default $QUANTSHIFT_ROOT or /opt/quantshift)")
    p.add_argument("--keys", type=Path, default=None,
                   help="keys directory: trusted/*.pub, and signing.key on the training host "
                        "(default $QUANTSHIFT_KEYS or /etc/quantshift/keys)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")


def _source_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", choices=["bundled", "csv", "yfinance"], default="bundled")
    p.add_argument("--data", help="Yahoo-format CSV file (with --source csv)")
    p.add_argument("--symbol", default="SPY", help="ticker for --source yfinance")
    p.add_argument("--max-cache-age-hours", type=float, default=72.0,
                   help="yfinance: fall back to a cache at most this old")
    p.add_argument("--as-of", default=None, help="last bar of the window (YYYY-MM-DD)")


def _train_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--years", type=float, default=2.0, help="rolling window length")
    p.add_argument("--labeler", choices=sorted(LABELERS), default=DEFAULT_LABELER)
    p.add_argument("--gap", type=int, default=21, help="embargo bars (>= label horizon)")
    p.add_argument("--no-stress-memory", action="store_true",
                   help="train on the window only (same as --memory window)")
    p.add_argument("--memory", choices=MEMORIES, default="auto",
                   help="labeled rows from before the window to train on: none (window), "
                        "stress rows, or all (auto: all for hmm, stress otherwise)")
    p.add_argument("--estimator", choices=ESTIMATORS, default="forest",
                   help="forest or a soft-voting ensemble (forest, boosting, logistic)")
    p.add_argument("--tune", action="store_true",
                   help="search the forest's parameters by time-series CV in the training rows")
    p.add_argument("--tune-trials", type=int, default=8, help="candidates tried by --tune")
    gate = p.add_argument_group("gate (defaults per labeler: docs/model.md)")
    gate.add_argument("--min-accuracy", type=float, default=None,
                      help=f"absolute floor of the gate metric ({defaults.floors_text()})")
    gate.add_argument("--max-regression", type=float, default=None,
                      help="max drop vs the active model on the same holdout (0.05)")
    gate.add_argument("--gate-metric", choices=list(GATE_METRICS), default=None,
                      help="hmm: balanced_accuracy, rules: test_accuracy")
    gate.add_argument("--beat-baseline", choices=[*BASELINE_CHOICES, "none"], default=None,
                      help="baseline the candidate must not trail on the holdout "
                           "(hmm: strongest, rules: majority)")
    gate.add_argument("--baseline-tolerance", type=float, default=None,
                      help="how far the candidate may trail that baseline (hmm 0.10)")
    forest = p.add_argument_group("Random Forest (defaults in docs/model.md)")
    forest.add_argument("--n-estimators", metavar="N", help="trees (default 100)")
    forest.add_argument("--max-depth", metavar="N|none", help="tree depth (default 10)")
    forest.add_argument("--max-features", metavar="F",
                        help="features tried per split: fraction in (0, 1], count, sqrt, log2 "
                             "or none (default 0.5)")
    forest.add_argument("--min-samples-leaf", metavar="N", help="default 1")
    forest.add_argument("--class-weight", metavar="W",
                        help="none, balanced or balanced_subsample (default none)")
    forest.add_argument("--seed", metavar="N", help="random_state (default 42)")
    forest.add_argument("--max-samples", metavar="F",
                        help="share of the training rows each tree is grown on (docs/model.md)")


def _freeze_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("change freeze (default: $QUANTSHIFT_FREEZE_CALENDAR, _MARGIN, "
                             "_EXTRA; no calendar = no freeze)")
    g.add_argument("--calendar", default=None, help="exchange calendar, e.g. XNYS")
    g.add_argument("--margin", default=None, help="before the open and after the close: 30m, 1h")
    g.add_argument("--extra", action="append", default=None,
                   help="extra window: DATE, START..END (dates or ISO times), =reason optional")
    g.add_argument("--force", action="store_true",
                   help="train/promote: override a freeze (logged and alerted)")


def _model_parsers(sub: Any) -> None:
    """Commands that train, promote, restore, check or use a model."""
    p = sub.add_parser("train", help="train a candidate, gate it, optionally promote it",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    _source_opts(p)
    _train_opts(p)
    p.add_argument("--promote", action="store_true", help="promote when the gate passes")
    p.add_argument("--keep-backups", type=int, default=defaults.KEEP_BACKUPS)
    p.add_argument("--keep-logs", type=int, default=defaults.KEEP_LOGS)
    p.add_argument("--check", action="store_true", help="train and gate; write nothing")
    _freeze_opts(p)

    p = sub.add_parser("promote", help="make a staged candidate active")
    _common(p)
    p.add_argument("artifact", type=Path,
                   help="candidate .pkl (metadata beside it) or a release .tar, unpacked "
                        "into the store's staging first")
    p.add_argument("--keep-backups", type=int, default=defaults.KEEP_BACKUPS)
    _freeze_opts(p)

    p = sub.add_parser("rollback", help="make a backup active again (verified first)")
    _common(p)
    p.add_argument("--to", default="latest", help="latest or a VERSION")
    p.add_argument("--keep-backups", type=int, default=defaults.KEEP_BACKUPS)

    p = sub.add_parser("verify", help="check sha256 of the active model or a backup")
    _common(p)
    p.add_argument("--target", default="active", help="active, all or a backup VERSION")

    for name, text in (("status", "active model, age, integrity, backups"),
                       ("backups", "list backups")):
        p = sub.add_parser(name, help=text)
        _common(p)

    p = sub.add_parser("evaluate", help="score a stored artifact on fresh data (no writes)")
    _common(p)
    _source_opts(p)
    p.add_argument("--to", default="latest", help="backup VERSION, latest, or active")
    p.add_argument("--force", action="store_true",
                   help="decide a rollback to it even below the floor (decision.forced)")

    p = sub.add_parser("predict", help="regime of the newest bar with the active model")
    _common(p)
    _source_opts(p)


def _ops_parsers(sub: Any) -> None:
    """Operations around the store: doctor, freeze, keys, notify, serve, walkforward."""
    p = sub.add_parser("doctor", help="diagnose the store and name the command that fixes it")
    _common(p)
    p.add_argument("--repair", action="store_true",
                   help="apply the fixes that only restore trusted files (docs/reliability.md)")

    p = sub.add_parser("freeze", help="is now (or --at) inside a change freeze, and until when")
    _common(p)
    _freeze_opts(p)
    p.add_argument("--at", default=None, help="ISO 8601 time to check (default now; UTC "
                                              "unless it has an offset)")
    p.add_argument("--schedule", nargs=3, metavar=("MINUTE", "HOUR", "WEEKDAY"),
                   help="check a cron schedule's next 28 days of runs instead")
    p.add_argument("--schedule-timezone", default="UTC", help="time zone the cron runs in")

    p = sub.add_parser("keys", help="fleet signing keys: generate, show, public")
    _common(p)
    p.add_argument("action", choices=["generate", "show", "public"],
                   help="generate a key pair in --keys (never overwrites); show the trusted "
                        "keys; print the public key of --key")
    p.add_argument("--key", type=Path, default=None, help="private key file (for public)")

    p = sub.add_parser("notify", help="send an alert (email, Slack, Discord)")
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--kind", required=True, choices=list(KINDS))
    p.add_argument("--subject", required=True)
    p.add_argument("--message", default="")
    p.add_argument("--env-file", type=Path, default=None, help="alert settings (KEY=VALUE)")

    p = sub.add_parser("serve", help="HTTP service: /healthz, /regime, /metrics")
    _common(p)
    _source_opts(p)
    p.add_argument("--host", default="127.0.0.1", help="listen address")
    p.add_argument("--port", type=int, default=8787, help="listen port")
    p.add_argument("--refresh-seconds", type=float, default=300.0,
                   help="market data refresh interval")

    p = sub.add_parser("walkforward", help="monthly walk-forward report over the history")
    _common(p)
    _source_opts(p)
    _train_opts(p)
    p.add_argument("--start", default=None, help="first month to report (YYYY-MM-DD)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="quantshift-ml", description=__doc__.split("\n\n")[0],
                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _model_parsers(sub)
    insight.add_monitor_parser(sub, _common, _source_opts)
    insight.add_parsers(sub, _common, _source_opts)
    cli_ab.add_parser(sub, _common, _source_opts)
    _ops_parsers(sub)
    return parser


def _train_config(a: argparse.Namespace) -> TrainConfig:
    given = {"n_estimators": a.n_estimators, "max_depth": a.max_depth,
             "max_features": a.max_features, "min_samples_leaf": a.min_samples_leaf,
             "class_weight": a.class_weight, "random_state": a.seed,
             "max_samples": a.max_samples}
    return TrainConfig(years=a.years, labeler=a.labeler, gap=a.gap,
                       stress_memory=not a.no_stress_memory,
                       memory="window" if a.no_stress_memory else a.memory,
                       estimator=a.estimator, tune=a.tune, tune_trials=a.tune_trials,
                       model=model_params({k: v for k, v in given.items() if v is not None}))


def _gate(a: argparse.Namespace) -> GateConfig:
    return gate_for(a.labeler, {"metric": a.gate_metric, "floor": a.min_accuracy,
                                "max_regression": a.max_regression,
                                "beat_baseline": a.beat_baseline,
                                "baseline_tolerance": a.baseline_tolerance})


def _source(a: argparse.Namespace, root: Path) -> Any:
    return make_source(a.source, data=a.data, symbol=a.symbol, root=root,
                       max_cache_age_hours=a.max_cache_age_hours)


def _alert_config(a: argparse.Namespace) -> AlertConfig:
    env = dict(os.environ)
    if a.env_file is not None:
        if not a.env_file.exists():
            raise UsageError(f"--env-file {a.env_file} does not exist")
        env.update(read_env_file(a.env_file))
    return AlertConfig.from_env(env)


def run(a: argparse.Namespace) -> dict[str, Any]:
    """Run one command; ``--keys`` applies to every store it opens, and to nothing after it."""
    if getattr(a, "keys", None) is None:
        return _run(a)
    old = os.environ.get(signing.KEYS_ENV)
    os.environ[signing.KEYS_ENV] = str(a.keys)
    try:
        return _run(a)
    finally:
        if old is None:
            os.environ.pop(signing.KEYS_ENV, None)
        else:
            os.environ[signing.KEYS_ENV] = old


def _run(a: argparse.Namespace) -> dict[str, Any]:
    root: Path = a.root or default_root()
    cmd = a.command
    if cmd == "keys":
        return commands.keys(a)
    if cmd == "doctor":
        return commands.doctor_cmd(a, root)
    if cmd == "freeze":
        return commands.freeze_cmd(a)
    if cmd == "promote" or (cmd == "train" and a.promote and not a.check):
        commands.guard_freeze(a, root, "promotion" if cmd == "promote" else "train --promote")
    if cmd == "monitor":
        report = run_monitor(root, thresholds=insight.thresholds(a, root),
                             service_url=a.service_url,
                             source=None if a.no_live else _source(a, root))
        write_outputs(report, root, a.textfile)
        if a.notify and report["status"] in ("WARNING", "CRITICAL"):
            subject, body = alert_text(report)
            report["alert"] = notify(root, "monitor", subject, body, _alert_config(a))
        return report
    if cmd == "explain":
        return insight.explain_cmd(a, root, _source(a, root))
    if cmd == "drift":
        return insight.drift_cmd(a, root, _source(a, root))
    if cmd == "ab":
        return cli_ab.run(a, root, lambda: _source(a, root))
    if cmd == "notify":
        return notify(root, a.kind, a.subject, a.message, _alert_config(a))
    if cmd == "serve":
        from quantshift_ml.service import serve

        serve(root, _source(a, root), host=a.host, port=a.port, symbol=a.symbol,
              refresh_seconds=a.refresh_seconds)
        return {"stopped": True}
    if cmd == "walkforward":
        from quantshift_ml.training.walkforward import run_walkforward

        src = _source(a, root)
        return run_walkforward(src.load(), _train_config(a), _gate(a), start=a.start,
                               origin=src.name)
    if cmd == "promote":
        store = ModelStore(root, keep_backups=a.keep_backups)
        if a.artifact.suffix != ".tar":
            return store.promote(a.artifact)
        from quantshift_ml.store.release import unpack_release

        return store.promote(unpack_release(a.artifact, store.layout.staging))
    if cmd == "rollback":
        return ModelStore(root, keep_backups=a.keep_backups).rollback(a.to)
    return _run_operations(a, root, cmd)


def _run_operations(a: argparse.Namespace, root: Path, cmd: str) -> dict[str, Any]:
    """The commands that train or score, through ``operations``.

    Imported only here: ``serve`` and ``monitor`` start on every host at each
    rollout and each day, and skip the training pipeline.
    """
    from quantshift_ml import operations

    if cmd == "train":
        return operations.train(_source(a, root), root=root, config=_train_config(a),
                                gate=_gate(a), as_of=a.as_of, promote=a.promote,
                                check_mode=a.check, keep_backups=a.keep_backups,
                                keep_logs=a.keep_logs)
    if cmd == "verify":
        return operations.verify(root, a.target)
    if cmd == "status":
        return operations.status(root)
    if cmd == "backups":
        return {"backups": operations.status(root)["backups"]}
    if cmd == "evaluate":
        store = ModelStore(root)
        pkl = (store.layout.active_pkl if a.to == "active"
               else store.resolve_backup(a.to).pkl)
        return operations.evaluate_artifact(pkl, _source(a, root), root=root, as_of=a.as_of,
                                            force=a.force)
    if cmd == "predict":
        return operations.predict_latest(root, _source(a, root))
    raise UsageError(f"unknown command {cmd}")  # pragma: no cover - argparse guards


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    verbose = any(x in (argv if argv is not None else sys.argv[1:]) for x in ("-v", "--verbose"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args = parser.parse_args(argv)
        result = run(args)
    except QuantshiftError as exc:
        print(f"quantshift-ml: error: {exc}", file=sys.stderr)
        if as_json:
            print(json.dumps({**exc.details, "ok": False, "error": str(exc),
                              "error_type": type(exc).__name__, "exit_code": exc.exit_code},
                             sort_keys=True, default=str))
        return exc.exit_code
    except OSError as exc:
        # disk full, permissions, a vanished file: one line, not a traceback
        msg = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        print(f"quantshift-ml: error: {msg}", file=sys.stderr)
        if as_json:
            print(json.dumps({"ok": False, "error": msg, "error_type": type(exc).__name__,
                              "exit_code": 1}))
        return 1
    except KeyboardInterrupt:  # pragma: no cover
        return 130
    code = exit_code(args.command, result)
    if as_json:
        print(json.dumps({**result, "ok": code == 0, "exit_code": code}, sort_keys=True,
                         default=str))
    else:
        print(human(args.command, result))
    return code


def exit_code(cmd: str, result: dict[str, Any]) -> int:
    """The exit code of a command that ran to its end (module docstring: the contract)."""
    if cmd == "monitor":
        return EXIT[result["status"]]  # Nagios plugin convention
    if cmd == "drift":  # the same convention, over its checks
        return max((EXIT[c["status"]] for c in result.values()
                    if isinstance(c, dict) and "status" in c and c["status"] != "UNKNOWN"),
                   default=0)
    if cmd == "train" and not result["gate"]["passed"]:
        return GateRefused.exit_code
    if cmd == "status" and result.get("integrity", "ok") != "ok" and result["active"]:
        return IntegrityError.exit_code
    if (cmd == "verify" and not result["ok"]) or (cmd == "doctor" and not result["healthy"]):
        return IntegrityError.exit_code
    if cmd == "freeze" and (result.get("frozen") or result.get("ok") is False):
        return 5  # frozen now, or a schedule runs inside a freeze
    if cmd == "notify":
        return alert_exit_code(result)  # 1 when any configured channel failed
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
