"""Typed errors that carry the CLI exit code they map to.

The exit codes are a contract with cron, Ansible and AWX:
0 ok, 1 anything else, 2 bad input or usage, 3 gate refused, 4 integrity failure
(unsigned or forged model, sha mismatch, lock held).
"""

from __future__ import annotations


class QuantshiftError(Exception):
    """Base class: a failure the user can act on, reported without a traceback.

    ``details``: what the command had found before it failed (e.g. a refused
    candidate's metrics and gate decision), printed with ``--json``.
    """

    exit_code = 1

    def __init__(self, message: str, *, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class UsageError(QuantshiftError):
    """The command line or a parameter is wrong."""

    exit_code = 2


class DataError(QuantshiftError):
    """Market data is missing, malformed or too short to train on."""

    exit_code = 2


class DataSourceUnavailable(DataError):
    """The remote source failed after retries and no fresh-enough cache exists."""


class GateRefused(QuantshiftError):
    """A candidate did not pass the deployment gate; the active model stays."""

    exit_code = 3


class IntegrityError(QuantshiftError):
    """An artifact's sha256 does not match its metadata, or it is missing."""

    exit_code = 4


class LockHeld(IntegrityError):
    """Another training or promotion holds the store's exclusive lock."""
