"""How library code reports while it runs, without a user interface: callbacks the caller passes.

    def run_something(..., log=log_info, warn=log_warning, progress=no_progress):
        log("resuming after 12 records")                # informational line
        warn("shard 3/64 holds no document")            # something the user should see
        with progress("tracing tokens") as bar:         # a bar where the caller draws one
            bar.advance(512)

The command-line tools pass their own (``moetools.cli.common.say``, ``warn`` and
``progress``: ``tool: message`` on stderr, ``-q``, a rich bar on a terminal); a Python
caller passes ``print`` or nothing. The defaults go to the ``moetools`` logger, whose
warnings Python shows on stderr even when logging is not configured.
"""

from __future__ import annotations

import contextlib
import logging
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
    """``progress(description, total=None)`` -> a context manager yielding a :class:`ProgressBar`."""

    def __call__(self, description: str, total: float | None = None) -> AbstractContextManager[ProgressBar]: ...


class _Silent:
    def advance(self, amount: float = 1) -> None:
        pass


@contextlib.contextmanager
def no_progress(description: str, total: float | None = None) -> Iterator[ProgressBar]:
    """A progress factory that shows nothing (the default of library calls)."""
    yield _Silent()


def table_console(file=None, **kwargs):
    """A rich Console for a table on standard output whose closed pipe (``| head``) raises
    BrokenPipeError, so the tool exits 141 as every tool does (rich's own handler exits 1)."""
    from rich.console import Console

    class _PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError("standard output closed")

    return _PipeConsole(file=file, **kwargs)


__all__ = ["Log", "ProgressBar", "ProgressFactory", "log_info", "log_warning", "logger", "no_progress",
           "table_console"]
