"""The ``quantshift-ml`` argument parser: every command, its options and their defaults.

Kept apart from ``cli.py`` (which runs the commands) because the options are the
CLI's contract, read and reviewed on their own; ``cli.build_parser`` adds the
description and the exit-code epilog from ``cli``'s docstring.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from quantshift_ml import __version__, defaults
from quantshift_ml.cli import ab as cli_ab
from quantshift_ml.cli import insight
from quantshift_ml.console import cli as console_cli
from quantshift_ml.errors import UsageError
from quantshift_ml.monitoring.alerts import KINDS
from quantshift_ml.training.config import COMBINES, ESTIMATORS, MEMORIES
from quantshift_ml.training.gate import BASELINE_CHOICES, METRICS


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors get exit code 2 and JSON."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=None,
                   help="store root (default $QUANTSHIFT_ROOT or /opt/quantshift)")
    p.add_argument("--keys", type=Path, default=None,
                   help="keys directory: trusted/*.pub, and signing.key on the training host "
                        "(default $QUANTSHIFT_KEYS or /etc/quantshift/keys)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")


def source_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", choices=["bundled", "csv", "yfinance"],
                   default=defaults.SOURCE)
    p.add_argument("--data", help="Yahoo-format CSV file (with --source csv)")
    p.add_argument("--symbol", default=defaults.SYMBOL, help="ticker for --source yfinance")
    p.add_argument("--max-cache-age-hours", type=float, default=defaults.MAX_CACHE_AGE_HOURS,
                   help="yfinance: fall back to a cache at most this old")
    p.add_argument("--as-of", default=None, help="last bar of the window (YYYY-MM-DD)")


def train_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--years", type=float, default=defaults.YEARS, help="rolling window length")
    p.add_argument("--labeler", choices=sorted(defaults.LABELERS), default=defaults.LABELER)
    p.add_argument("--gap", type=int, default=defaults.GAP,
                   help="embargo bars (>= label horizon)")
    p.add_argument("--no-stress-memory", action="store_true",
                   help="train on the window only (same as --memory window)")
    p.add_argument("--memory", choices=MEMORIES, default="auto",
                   help="labeled rows from before the window to train on: none (window), "
                        "stress rows, or all (auto: all for hmm, stress otherwise)")
    p.add_argument("--estimator", choices=ESTIMATORS, default="forest",
                   help="forest or a soft-voting ensemble (forest, boosting, logistic)")
    p.add_argument("--combine", choices=COMBINES, default="max",
                   help="hmm: P(turbulent) is the larger of the estimator's and the HMM "
                        "filter's (max, default) or the estimator's alone (none)")
    p.add_argument("--tune", action="store_true",
                   help="search the forest's parameters by time-series CV in the training rows")
    p.add_argument("--tune-trials", type=int, default=8, help="candidates tried by --tune")
    gate = p.add_argument_group("gate (defaults per labeler: docs/model.md)")
    gate.add_argument("--min-accuracy", type=float, default=None,
                      help=f"absolute floor of the gate metric ({defaults.floors_text()})")
    gate.add_argument("--max-regression", type=float, default=None,
                      help="max drop vs the active model on the same holdout (0.05)")
    gate.add_argument("--gate-metric", choices=list(METRICS), default=None,
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


def progress_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true",
                   help="no progress line on stderr (shown only when stderr is a terminal)")


def freeze_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("change freeze (default: $QUANTSHIFT_FREEZE_CALENDAR, _MARGIN, "
                             "_EXTRA; no calendar = no freeze)")
    g.add_argument("--calendar", default=None, help="exchange calendar, e.g. XNYS")
    g.add_argument("--margin", default=None, help="before the open and after the close: 30m, 1h")
    g.add_argument("--extra", action="append", default=None,
                   help="extra window: DATE, START..END (dates or ISO times), =reason optional")
    g.add_argument("--force", action="store_true",
                   help="train/promote: override a freeze (logged and alerted)")


def champion_opts(p: argparse.ArgumentParser) -> None:
    """``train``'s champion settings (docs/model.md, "Champion and challengers")."""
    g = p.add_argument_group("champion (the family that ships is chosen on an out-of-time "
                             "record)")
    g.add_argument("--families", default=",".join(defaults.FAMILIES),
                   help="comma-separated families that compete (default: %(default)s)")
    g.add_argument("--record-months", type=int, default=defaults.RECORD_MONTHS,
                   help="months of record re-fitted at this training, each at its own "
                        "monthly cut-off (the previous release's record is reused and "
                        "extended; default %(default)s)")
    g.add_argument("--switch-margin", type=float, default=defaults.SWITCH_MARGIN,
                   help="with --champion-outcome settled_state: balanced-accuracy lead over "
                        "the incumbent family a challenger needs (default %(default)s)")
    outcome_opts(g)
    g.add_argument("--champion-floor", type=float, default=None,
                   help="refuse a champion whose primary outcome on the record is below this "
                        "(Sharpe for economic; default: no floor)")


def outcome_opts(g: Any) -> None:
    """The outcome policy's options, shared by ``train`` and ``walkforward`` (issue 31)."""
    g.add_argument("--champion-outcome", choices=defaults.CHAMPION_OUTCOMES,
                   default=defaults.CHAMPION_OUTCOME,
                   help="the outcome the champion is chosen on (default %(default)s, the A/B "
                        "test's primary; settled_state: balanced accuracy, issue 25's rule)")
    g.add_argument("--switch-confidence", type=float, default=defaults.SWITCH_CONFIDENCE,
                   help="share of month-block bootstrap draws a challenger must win against "
                        "the incumbent on that outcome (default %(default)s)")
    g.add_argument("--champion-guard", type=float, default=defaults.CHAMPION_GUARD,
                   help="a champion's record balanced accuracy may trail the best family's "
                        "by at most this (default %(default)s)")


def _model_parsers(sub: Any, exit_codes: str) -> None:
    """Commands that train, promote, restore, check or use a model."""
    p = sub.add_parser("train", help="train a candidate, gate it, optionally promote it",
                       epilog=exit_codes, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(p)
    source_opts(p)
    train_opts(p)
    p.add_argument("--promote", action="store_true", help="promote when the gate passes")
    p.add_argument("--keep-backups", type=int, default=defaults.KEEP_BACKUPS)
    p.add_argument("--keep-logs", type=int, default=defaults.KEEP_LOGS)
    p.add_argument("--check", action="store_true", help="train and gate; write nothing")
    champion_opts(p)
    progress_opt(p)
    freeze_opts(p)

    p = sub.add_parser("promote", help="make a staged candidate active")
    common(p)
    p.add_argument("artifact", type=Path,
                   help="candidate .pkl (metadata beside it) or a release .tar, unpacked "
                        "into the store's staging first")
    p.add_argument("--keep-backups", type=int, default=defaults.KEEP_BACKUPS)
    freeze_opts(p)

    p = sub.add_parser("rollback", help="make a backup active again (verified first)")
    common(p)
    p.add_argument("--to", default="latest", help="latest or a VERSION")
    p.add_argument("--keep-backups", type=int, default=defaults.KEEP_BACKUPS)

    p = sub.add_parser("verify", help="check sha256 of the active model or a backup")
    common(p)
    p.add_argument("--target", default="active", help="active, all or a backup VERSION")

    for name, text in (("status", "active model, age, integrity, backups"),
                       ("backups", "list backups")):
        p = sub.add_parser(name, help=text)
        common(p)

    p = sub.add_parser("evaluate", help="score a stored artifact on fresh data (no writes)")
    common(p)
    source_opts(p)
    p.add_argument("--to", default="latest", help="backup VERSION, latest, or active")
    p.add_argument("--force", action="store_true",
                   help="decide a rollback to it even below the floor (decision.forced)")

    p = sub.add_parser("champion", help="the active model's family, its record and why it "
                                        "was chosen, and every family's live record")
    common(p)
    source_opts(p)
    p.add_argument("--no-live", action="store_true",
                   help="skip the live record (it reads the market data to settle the labels)")

    p = sub.add_parser("predict", help="regime of the newest bar with the active model")
    common(p)
    source_opts(p)


def _ops_parsers(sub: Any) -> None:
    """Operations around the store: doctor, freeze, keys, notify, serve (and walkforward)."""
    p = sub.add_parser("doctor", help="diagnose the store and name the command that fixes it")
    common(p)
    p.add_argument("--repair", action="store_true",
                   help="apply the fixes that only restore trusted files (docs/reliability.md)")

    p = sub.add_parser("freeze", help="is now (or --at) inside a change freeze, and until when")
    common(p)
    freeze_opts(p)
    p.add_argument("--at", default=None, help="ISO 8601 time to check (default now; UTC "
                                              "unless it has an offset)")
    p.add_argument("--schedule", nargs=3, metavar=("MINUTE", "HOUR", "WEEKDAY"),
                   help="check a cron schedule's next 28 days of runs instead")
    p.add_argument("--schedule-timezone", default="UTC", help="time zone the cron runs in")

    p = sub.add_parser("keys", help="fleet signing keys: generate, show, public")
    common(p)
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
    common(p)
    source_opts(p)
    p.add_argument("--host", default="127.0.0.1", help="listen address")
    p.add_argument("--port", type=int, default=defaults.SERVICE_PORT, help="listen port")
    p.add_argument("--refresh-seconds", type=float, default=300.0,
                   help="market data refresh interval")

    _walkforward_parser(sub)


def _walkforward_parser(sub: Any) -> None:
    """``walkforward``: the monthly report, its champion row and the multi-market run."""
    p = sub.add_parser("walkforward", help="monthly walk-forward report over the history")
    common(p)
    source_opts(p)
    train_opts(p)
    p.add_argument("--start", default=None, help="first month to report (YYYY-MM-DD)")
    p.add_argument("--families", default=None,
                   help="champion row: comma-separated field (default: every family the "
                        "labeler allows: hmm_filter, hmm_range_filter, forest)")
    p.add_argument("--record-months", type=int, default=0,
                   help="champion row: months of out-of-time record per decision "
                        "(default 0: every month so far)")
    p.add_argument("--switch-margin", type=float, default=0.01,
                   help="champion row with --champion-outcome settled_state: "
                        "balanced-accuracy lead a challenger needs")
    outcome_opts(p)
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="monthly refits on N local processes (joblib, loky); the report "
                        "is the same apart from 'seconds' (default 1); with --universe: "
                        "markets at once")
    p.add_argument("--universe", type=Path, default=None, metavar="FILE",
                   help="walk-forward every market listed in FILE (JSON or text; instead of "
                        "--source/--data) and print one summary")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="with --universe: run the markets on this Dask distributed scheduler "
                        "(needs quantshift-ml[cluster]; workers need the package, no data)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="with --universe: also write each market's full report to DIR")
    progress_opt(p)


def build_parser(description: str, exit_codes: str) -> argparse.ArgumentParser:
    """The whole parser; ``exit_codes`` is the epilog of the top level and of ``train``."""
    parser = _Parser(prog="quantshift-ml", description=description,
                     epilog=exit_codes, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _model_parsers(sub, exit_codes)
    insight.add_monitor_parser(sub, common, source_opts)
    insight.add_parsers(sub, common, source_opts)
    cli_ab.add_parser(sub, common, source_opts)
    console_cli.add_parser(sub)
    _ops_parsers(sub)
    return parser
