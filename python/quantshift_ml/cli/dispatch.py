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

from quantshift_ml.cli import ab as cli_ab
from quantshift_ml.cli import commands, insight
from quantshift_ml.cli import parser as cli_parser
from quantshift_ml.cli.text import human
from quantshift_ml.console import cli as console_cli
from quantshift_ml.data.sources import make_source
from quantshift_ml.errors import GateRefused, IntegrityError, QuantshiftError, UsageError
from quantshift_ml.monitoring.alerts import AlertConfig, notify, read_env_file
from quantshift_ml.monitoring.alerts import exit_code as alert_exit_code
from quantshift_ml.monitoring.checks import EXIT
from quantshift_ml.store import ModelStore, default_root, signing
from quantshift_ml.training import progress
from quantshift_ml.training.config import TrainConfig, model_params
from quantshift_ml.training.gate import GateConfig, gate_for

log = logging.getLogger("quantshift_ml")
EXIT_CODES = __doc__.split("\n\n")[1] if __doc__ else ""
"""The exit-code contract, printed by --help exactly as documented above."""


def build_parser() -> argparse.ArgumentParser:
    return cli_parser.build_parser(__doc__.split("\n\n")[0] if __doc__ else "", EXIT_CODES)


def _train_config(a: argparse.Namespace) -> TrainConfig:
    given = {"n_estimators": a.n_estimators, "max_depth": a.max_depth,
             "max_features": a.max_features, "min_samples_leaf": a.min_samples_leaf,
             "class_weight": a.class_weight, "random_state": a.seed,
             "max_samples": a.max_samples}
    champion: dict[str, Any] = {}
    if a.command == "train":  # the walk-forward's options of these names set its policy
        champion = {"families": tuple(n.strip() for n in a.families.split(",") if n.strip()),
                    "record_months": a.record_months, "switch_margin": a.switch_margin,
                    "champion_outcome": a.champion_outcome,
                    "switch_confidence": a.switch_confidence,
                    "champion_guard": a.champion_guard, "champion_floor": a.champion_floor}
    return TrainConfig(years=a.years, labeler=a.labeler, gap=a.gap,
                       stress_memory=not a.no_stress_memory,
                       memory="window" if a.no_stress_memory else a.memory,
                       estimator=a.estimator, combine=a.combine, tune=a.tune,
                       tune_trials=a.tune_trials, **champion,
                       model=model_params({k: v for k, v in given.items() if v is not None}))


def _gate(a: argparse.Namespace) -> GateConfig:
    return gate_for(a.labeler, {"metric": a.gate_metric, "floor": a.min_accuracy,
                                "max_regression": a.max_regression,
                                "beat_baseline": a.beat_baseline,
                                "baseline_tolerance": a.baseline_tolerance})


def _champion_policy(a: argparse.Namespace) -> Any:
    """The walk-forward's champion policy from the options, checked before any work."""
    from quantshift_ml.champion.families import family
    from quantshift_ml.walkforward.monthly import ChampionPolicy

    names = tuple(n.strip() for n in a.families.split(",") if n.strip()) if a.families else None
    for n in names or ():
        family(n)  # UsageError naming the known families
    if a.families is not None and not names:
        raise UsageError("--families needs at least one family name")
    if names and a.labeler != "hmm" and "forest" not in names:
        raise UsageError(f"--families {a.families}: the filters need the hmm labeler, this "
                         f"run uses {a.labeler!r}; add forest")
    if a.record_months < 0:
        raise UsageError(f"--record-months must be 0 (every month so far) or more, not "
                         f"{a.record_months}")
    if not 0.0 <= a.switch_margin < 1.0:
        raise UsageError(f"--switch-margin must be within 0..1, not {a.switch_margin}")
    if not 0.5 <= a.switch_confidence < 1.0 or not 0.0 <= a.champion_guard <= 1.0:
        raise UsageError(f"--switch-confidence must be within 0.5..1 and --champion-guard "
                         f"within 0..1, not {a.switch_confidence} and {a.champion_guard}")
    return ChampionPolicy(families=names, record_months=a.record_months or None,
                          margin=a.switch_margin, outcome=a.champion_outcome,
                          confidence=a.switch_confidence, guard=a.champion_guard)


def _source(a: argparse.Namespace, root: Path) -> Any:
    return make_source(a.source, data=a.data, symbol=a.symbol, root=root,
                       max_cache_age_hours=a.max_cache_age_hours)


def _universe(a: argparse.Namespace, root: Path, policy: Any) -> dict[str, Any]:
    """``walkforward --universe``: the file lists the markets, so --source/--data may not."""
    from quantshift_ml import defaults
    from quantshift_ml.walkforward import universe

    if a.data is not None or a.source != defaults.SOURCE:
        raise UsageError("--universe lists the markets itself: drop --source/--data")
    markets = universe.read_universe(a.universe)
    bars = universe.load_bars(markets, root=root, max_cache_age_hours=a.max_cache_age_hours)
    return universe.run_universe(markets, bars, _train_config(a), _gate(a), start=a.start,
                                 policy=policy, jobs=a.jobs, scheduler=a.scheduler,
                                 out=a.out)


def _alert_config(a: argparse.Namespace) -> AlertConfig:
    env = dict(os.environ)
    if a.env_file is not None:
        if not a.env_file.exists():
            raise UsageError(f"--env-file {a.env_file} does not exist")
        env.update(read_env_file(a.env_file))
    return AlertConfig.from_env(env)


def run(a: argparse.Namespace) -> dict[str, Any]:
    """Run one command; ``--keys`` applies to every store it opens, and to nothing after it."""
    if a.command == "console":  # no store: the console runs playbooks
        return console_cli.run(a)
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
        from quantshift_ml.monitoring.monitor import alert_text, run_monitor, write_outputs

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
        _one_blas_thread()
        from quantshift_ml.serving.service import serve

        serve(root, _source(a, root), host=a.host, port=a.port, symbol=a.symbol,
              refresh_seconds=a.refresh_seconds)
        return {"stopped": True}
    if cmd == "walkforward":
        from quantshift_ml.walkforward.monthly import run_walkforward

        policy = _champion_policy(a)
        if a.jobs < 1:
            raise UsageError(f"--jobs must be at least 1, not {a.jobs}")
        if a.universe is not None:
            return _universe(a, root, policy)
        if a.scheduler is not None or a.out is not None:
            raise UsageError("--scheduler and --out go with --universe FILE")
        src = _source(a, root)
        return run_walkforward(src.load(), _train_config(a), _gate(a), start=a.start,
                               origin=src.name, policy=policy, jobs=a.jobs)
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
    from quantshift_ml.ops import operations

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
        choice = None if a.to == "active" else store.choose_backup(a.to)
        pkl = store.layout.active_pkl if choice is None else choice.artifact.pkl
        return {**operations.evaluate_artifact(pkl, _source(a, root), root=root, as_of=a.as_of,
                                               force=a.force),
                "skipped": [] if choice is None else choice.skipped}
    if cmd == "predict":
        return operations.predict_latest(root, _source(a, root))
    if cmd == "champion":
        return commands.champion_cmd(root, None if a.no_live else lambda: _source(a, root),
                                     a.symbol)
    raise UsageError(f"unknown command {cmd}")  # pragma: no cover - argparse guards


BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _one_blas_thread() -> None:
    """``serve``: one BLAS thread unless the environment says otherwise.

    The service's numpy work is one row at a time; OpenBLAS would start a thread per
    core when numpy is imported (about 0.05 CPU-s of a start, issue 28). Only
    effective before numpy is first imported, which the CLI's own imports avoid.
    """
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    verbose = any(x in (argv if argv is not None else sys.argv[1:]) for x in ("-v", "--verbose"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args = parser.parse_args(argv)
        # walkforward and train (--tune) show progress on a terminal; --quiet or no TTY: none
        with progress.shown_on(sys.stderr, quiet=getattr(args, "quiet", True)):
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
