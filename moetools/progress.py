"""How library code reports while it runs, without a user interface: callbacks the caller passes.

    def run_something(..., log=log_info, warn=log_warning, progress=no_progress):
        log("resuming after 12 records")                # informational line
        warn("shard 3/64 holds no document")            # something the user should see
        with progress("tracing tokens") as bar:         # a bar where the caller draws one
            bar.advance(512)

The command-line tools pass their own (``moetools.cli.common.say``, ``warn`` and
``progress``: ``tool: message`` on stderr, ``-q``, a rich bar with done/total, rate and
ETA on a terminal, and :class:`LineProgress`, at most one line a minute, when stderr is a
log file); a Python caller passes ``print`` or nothing. The defaults go to the ``moetools``
logger, whose warnings Python shows on stderr even when logging is not configured.

A task that knows its size passes ``total`` (and ``unit="bytes"`` when it counts bytes of
input read, e.g. a corpus file's size), so that the time left can be told.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

logger = logging.getLogger("moetools")

#: a callback taking one line of text
Log = Callable[[str], None]


def log_info(message: str) -> None:
    logger.info(message)


def log_warning(message: str) -> None:
    logger.warning(message)


class ProgressBar(Protocol):
    def advance(self, amount: float = 1) -> None: ...


class ProgressFactory(Protocol):
    """``progress(description, total=None, unit="")`` -> a context manager yielding a :class:`ProgressBar`.

    ``unit`` names what ``advance`` counts (``"bytes"``, ``"tokens"``...; empty: items).
    """

    def __call__(self, description: str, total: float | None = None,
                 unit: str = "") -> AbstractContextManager[ProgressBar]: ...


class _Silent:
    def advance(self, amount: float = 1) -> None:
        pass


@contextlib.contextmanager
def no_progress(description: str, total: float | None = None, unit: str = "") -> Iterator[ProgressBar]:
    """A progress factory that shows nothing (the default of library calls)."""
    yield _Silent()


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (as rich shows elapsed and remaining time)."""
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_amount(value: float, unit: str = "") -> str:
    """``12.3 MB`` for bytes (decimal units, as rich's download columns), else the whole number."""
    if unit == "bytes":
        for threshold, suffix in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if value >= threshold:
                return f"{value / threshold:.1f} {suffix}"
        return f"{value:.0f} B"
    return f"{value:.0f}"


def progress_line(description: str, done: float, total: float | None, unit: str, elapsed: float) -> str:
    """``DESCRIPTION: DONE/TOTAL UNIT (P%), RATE UNIT/s, ETA H:MM:SS, elapsed H:MM:SS`` (what is known)."""
    label = "" if unit in ("", "bytes") else f" {unit}"
    text = f"{description}: {format_amount(done, unit)}"
    if total:
        text += f"/{format_amount(total, unit)}{label} ({min(100.0, 100 * done / total):.0f}%)"
    else:
        text += label
    rate = done / elapsed if elapsed > 0 else 0.0
    if unit == "bytes":
        text += f", {format_amount(rate, unit)}/s"
    else:
        text += f", {rate:.1f}{label or ' items'}/s"
    if total and rate > 0:
        text += f", ETA {format_duration(max(0.0, total - done) / rate)}"
    return text + f", elapsed {format_duration(elapsed)}"


def file_size(source) -> int | None:
    """The size in bytes of the regular file ``source`` reads (a progress total); None for a pipe or stdin."""
    import os
    import stat

    try:
        status = os.fstat(source.fileno())
        source.tell()  # a position to measure against
    except (AttributeError, OSError, ValueError):
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


class BytesRead:
    """Progress in bytes of an input file: ``total`` is its size (None when it is not a regular file);
    ``catch_up(bar)`` advances ``bar`` to the position the reader has reached in it.

    A reader that reads ahead of its work (moe-trace's sort buffer) passes ``done``, the share of what it
    has read that is done (e.g. tokens traced / tokens read): the bar shows that share of the position,
    and never goes back.
    """

    def __init__(self, source):
        self.source = source
        self.total = file_size(source)
        self.shown = 0.0

    def catch_up(self, bar: ProgressBar, done: float = 1.0) -> None:
        if self.total is not None:
            reached = self.source.tell() * min(1.0, max(0.0, done))
            if reached > self.shown:
                bar.advance(reached - self.shown)
                self.shown = reached


class LineProgress:
    """Progress as text lines for a log (a SLURM job's stderr): at most one line every ``interval`` seconds.

    The first line comes ``interval`` seconds after the start (a short run writes none), each later
    one ``interval`` seconds after the one before; ``write`` takes one line, ``clock`` is a monotonic
    clock in seconds (injectable for tests). Also the :class:`ProgressBar` of ``update(**fields)``
    callers (``total``, ``completed``, ``advance``; a ``description`` is ignored: the line keeps its own).

    >>> with LineProgress("tracing corpus", total=4e9, unit="bytes", write=print) as bar:
    ...     bar.advance(65536)
    """

    def __init__(self, description: str, total: float | None = None, unit: str = "", *, write: Log,
                 interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.description, self.total, self.unit = description, total, unit
        self.write, self.interval, self.clock = write, interval, clock
        self.done = 0.0
        self.start = self.last = clock()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def advance(self, amount: float = 1) -> None:
        self.done += amount
        self._tick()

    def update(self, *, total: float | None = None, completed: float | None = None, advance: float = 0,
               **ignored) -> None:
        if total is not None:
            self.total = total
        if completed is not None:
            self.done = completed
        self.done += advance
        self._tick()

    def _tick(self) -> None:
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.write(progress_line(self.description, self.done, self.total, self.unit, now - self.start))


def table_console(file=None, **kwargs):
    """A rich Console for a table on standard output whose closed pipe (``| head``) raises
    BrokenPipeError, so the tool exits 141 as every tool does (rich's own handler exits 1)."""
    from rich.console import Console

    class _PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError("standard output closed")

    return _PipeConsole(file=file, **kwargs)


__all__ = ["BytesRead", "LineProgress", "Log", "ProgressBar", "ProgressFactory", "file_size", "format_amount",
           "format_duration", "log_info", "log_warning", "logger", "no_progress", "progress_line", "table_console"]
