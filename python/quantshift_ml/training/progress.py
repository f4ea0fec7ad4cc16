"""Progress of long work on stderr: one updating line, on a terminal only.

``walkforward`` (a minute and a half on the bundled S&P 500) and ``train --tune``
used to print nothing until the end. The CLI opens a display for the run
(``shown_on``) and the long loops report to whatever display is open (``task``);
with none open, or when the stream is not a terminal (cron, Ansible, a pipe),
or with ``--quiet``, a task costs nothing and writes nothing.

Why a context rather than an argument: the tuning loop runs four calls below the
CLI (``operations.train`` -> ``train_candidate`` -> ``fit_estimator`` ->
``tune_forest``), and no result may depend on whether someone watches, so the
progress never enters the signatures that compute results. Tasks nest (a
walk-forward that tunes every month): only the outermost one is shown, the line
would otherwise jump between two counts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TextIO

CLEAR_LINE = "\r\x1b[K"
"""Back to the start of the line and erase it: each update replaces the previous one."""


@dataclass
class Display:
    """Where progress goes for one run: the stream and the clock (both injectable)."""

    stream: TextIO
    clock: Callable[[], float] = time.monotonic
    busy: bool = field(default=False, init=False)


_DISPLAY: ContextVar[Display | None] = ContextVar("quantshift_progress", default=None)


@contextlib.contextmanager
def shown_on(stream: TextIO, *, tty: bool | None = None, quiet: bool = False,
             clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Show the progress of the block's tasks on ``stream`` if it is a terminal.

    ``tty`` is that decision when given (tests, or a caller that knows better);
    by default ``stream.isatty()``. ``quiet`` shows nothing whatever the stream.
    """
    shown = not quiet and (stream.isatty() if tty is None else tty)
    token = _DISPLAY.set(Display(stream, clock) if shown else None)
    try:
        yield
    finally:
        _DISPLAY.reset(token)


def clock_text(seconds: float) -> str:
    """``83.4`` -> ``1:23``; ``3725`` -> ``1:02:05``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class Task:
    """A count of ``total`` steps; ``advance`` after each one redraws the line."""

    def __init__(self, display: Display | None, label: str, total: int, unit: str) -> None:
        self.display, self.label, self.total, self.unit = display, label, total, unit
        self.done = 0
        self.started = display.clock() if display is not None else 0.0

    def line(self) -> str:
        """``walk-forward: 37/201 months, 0:16 elapsed, about 1:12 left``."""
        assert self.display is not None
        elapsed = self.display.clock() - self.started
        head = f"{self.label}: {self.done}/{self.total} {self.unit}, {clock_text(elapsed)} elapsed"
        if self.done >= self.total:
            return head
        if not self.done:
            return f"{head}, estimating"
        left = elapsed / self.done * (self.total - self.done)
        return f"{head}, about {clock_text(left)} left"

    def draw(self, end: str = "") -> None:
        if self.display is not None:
            self.display.stream.write(CLEAR_LINE + self.line() + end)
            self.display.stream.flush()

    def advance(self, steps: int = 1) -> None:
        self.done = min(self.total, self.done + steps)
        self.draw()


@contextlib.contextmanager
def task(label: str, total: int, unit: str) -> Iterator[Task]:
    """A task shown on the open display, unless none is open or another task holds it.

    The line ends with a newline when the block ends, so what is printed next
    starts on a line of its own.
    """
    display = _DISPLAY.get()
    owner = display is not None and not display.busy
    shown = Task(display if owner else None, label, total, unit)
    if display is not None and owner:
        display.busy = True
        shown.draw()
    try:
        yield shown
    finally:
        if display is not None and owner:
            shown.draw("\n")
            display.busy = False
