"""What every tool shares: the error boundary, stdin/stdout, common flags, progress.

A tool module looks like::

    @tool("moe-cat", example="moe-cat trace.msgpack.zst --head 2 --format jsonl")
    @input_argument()
    @output_options(default_format="jsonl")
    def command(input, output, fmt, uncompressed, **_):
        \"\"\"One-line summary.\n\nLonger description.\"\"\"
        reader = read_input(input, kinds="trace")
        with open_stream_writer(output, "trace", fmt, uncompressed, model=reader.header["model"]) as writer:
            ...

    main = command.main   # console-script entry point

Errors: library code raises ``moetools.errors`` exceptions; :class:`ToolCommand`
prints them as ``tool: message`` on stderr (a traceback only with ``-v``) and
exits with the code of the exception (see ``moetools.errors``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
import time
import traceback

import click

from .. import __version__
from ..errors import EXIT_FAILURE, EXIT_SIGPIPE, EXIT_USAGE, MoetoolsError
from ..streams import files
from ..streams.files import create_output as open_output
from ..streams.files import open_input, partial_path

EXIT_STATUS_TEXT = """\
0    success.
1    runtime failure (a model, network or file-system error, training that diverged to a
     non-finite loss or gradient, or anything unexpected).
2    usage error or invalid input: bad options, a NaN or infinite number in an option or a record,
     a file that is not a valid stream, a stream of the wrong kind, segments from different models,
     an unsupported format version, a model directory whose weights do not belong to its config (a
     tensor missing, unexpected or of another shape), binary data or only unusable lines given as a
     corpus; an -o that is an input, holds one or lies inside one, that exists (without --force), or
     that moetools did not write (even with --force; moe-formats(5), OUTPUTS).
3    truncated or empty input: a stream that ends before its end record, or inside a record or
     zstd frame; input with nothing to read (no bytes, e.g. /dev/null, or a corpus whose every
     document is empty).
130  interrupted (Ctrl-C, SIGINT). Every tool leaves the stream files written so far under their
     temporary names (NAME.partial, never renamed into place): complete records without an end
     record, which read as truncated; tools with --resume continue from them. Model directories are
     renamed into place only when complete; training resumes from its checkpoint. (After an error,
     exit 1-3, a tool removes its NAME.partial unless it can resume from it.)
141  the reader of standard output went away (e.g. `| head`); exits quietly.
143  terminated by SIGTERM (scancel, a SLURM time limit; SIGKILL: 137): the tool stops at once, with
     no message; NAME.partial is left as after Ctrl-C and --resume continues from it."""

#: Parameter names never recorded in stream headers (secrets).
SECRET_PARAMS = frozenset({"api_key"})


class _State:
    verbose = 0
    quiet = False
    tool = "moetools"


state = _State()


def say(message: str) -> None:
    """An informational line on stderr (``tool: message``), silenced by ``-q``."""
    if not state.quiet:
        click.echo(f"{state.tool}: {message}", err=True)


def warn(message: str) -> None:
    """A warning on stderr; shown even with ``-q``."""
    click.echo(f"{state.tool}: warning: {message}", err=True)


class _LibraryWarnings(logging.Handler):
    """The library's warnings (``moetools.progress.log_warning``) as this tool's ``tool: warning:`` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            warn(record.getMessage())


def _route_library_warnings() -> None:
    logger = logging.getLogger("moetools")
    if not any(isinstance(handler, _LibraryWarnings) for handler in logger.handlers):
        logger.addHandler(_LibraryWarnings())


def _fail(message: str, code: int) -> None:
    click.echo(f"{state.tool}: {message}", err=True)
    sys.exit(code)


def _quiet_broken_pipe() -> None:
    # Point stdout at /dev/null so the interpreter's final flush does not raise again.
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_SIGPIPE)


class _StdoutClosed(Exception):
    """A BrokenPipeError carried past click, which (8.5) turns EPIPE into a bare exit 1."""


class ErrorBoundary:
    """Mixin: the moetools error boundary around a click command's parsing and running."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _StdoutClosed() from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        state.tool = self.name or prog_name or "moetools"
        state.verbose, state.quiet = 0, False
        _route_library_warnings()
        try:
            result = super().main(args=args, prog_name=prog_name or self.name, complete_var=complete_var,
                                  standalone_mode=False, **extra)
            with contextlib.suppress(ValueError):  # stdout may be closed already (tests)
                sys.stdout.flush()
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.exceptions.Abort:
            _fail("interrupted", 130)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except (BrokenPipeError, _StdoutClosed):
            _quiet_broken_pipe()
        except click.ClickException as error:
            hint = f" (try '{self.name} --help')" if isinstance(error, click.UsageError) else ""
            _fail(error.format_message() + hint, error.exit_code)
        except MoetoolsError as error:
            if state.verbose:
                traceback.print_exc()
            _fail(str(error), error.exit_code)
        except OSError as error:
            if state.verbose:
                traceback.print_exc()
            _fail(f"{error.strerror or error}" + (f": {error.filename}" if error.filename else ""), EXIT_FAILURE)
        except Exception as error:  # noqa: BLE001 - the boundary: one line unless -v
            if state.verbose:
                traceback.print_exc()
            _fail(f"internal error: {type(error).__name__}: {error}"
                  + ("" if state.verbose else " (rerun with -v for a traceback)"), EXIT_FAILURE)
        if standalone_mode:
            sys.exit(0)
        return result


class ToolCommand(ErrorBoundary, click.Command):
    """A tool: a click command inside the error boundary."""


class ToolGroup(ErrorBoundary, click.Group):
    """A group of subcommands (``moetools corpus build``) inside the error boundary."""

    command_class = click.Command


def _set_verbose(ctx, param, value):
    state.verbose = value
    return value


def _set_quiet(ctx, param, value):
    state.quiet = value
    return value


def common_flags(name: str):
    """``--version``, ``-v/--verbose`` and ``-q/--quiet``, as every tool has them."""

    def decorate(function):
        function = click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True,
                                callback=_set_quiet, help="Only errors and warnings on stderr.")(function)
        function = click.option("-v", "--verbose", count=True, expose_value=False, is_eager=True,
                                callback=_set_verbose, help="More detail on stderr; tracebacks on errors.")(function)
        return click.version_option(__version__, "--version", prog_name=name,
                                    message="%(prog)s (moetools) %(version)s")(function)

    return decorate


def subcommand_verbosity(function):
    """``-v``/``-q`` after a subcommand too (``moetools corpus build -q``); they add to the group's flags."""
    def set_quiet(ctx, param, value):
        state.quiet = state.quiet or value

    def set_verbose(ctx, param, value):
        state.verbose = max(state.verbose, value)

    function = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=set_quiet,
                            help="Only errors and warnings on stderr.")(function)
    return click.option("-v", "--verbose", count=True, expose_value=False, callback=set_verbose,
                        help="More detail on stderr; tracebacks on errors.")(function)


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _epilog(example: str) -> str:
    return "Example:\n\n\b\n  " + "\n  ".join(example.strip().splitlines())


def tool(name: str, *, example: str, **command_kwargs):
    """Declare a tool: a :class:`ToolCommand` with ``--version``, ``-v`` and ``-q``.

    ``example`` is shown at the end of ``--help`` and in the man page's EXAMPLES.
    """

    def decorate(function):
        function = common_flags(name)(function)
        command = click.command(name, cls=ToolCommand, epilog=_epilog(example),
                                context_settings=CONTEXT_SETTINGS, **command_kwargs)(function)
        command.example = example.strip()
        return command

    return decorate


def tool_group(name: str, *, example: str, **group_kwargs):
    """Like :func:`tool`, for a command with subcommands."""

    def decorate(function):
        function = common_flags(name)(function)
        group = click.group(name, cls=ToolGroup, epilog=_epilog(example), context_settings=CONTEXT_SETTINGS,
                            **group_kwargs)(function)
        group.example = example.strip()
        return group

    return decorate


# -- numeric options ----------------------------------------------------------------------------

class FiniteFloat(click.FloatRange):
    """A float option that refuses ``nan``, ``inf`` and ``-inf`` (exit 2), optionally within a range.

    Every float option of every tool uses it (tests/project/test_refusals_nonfinite.py checks): a NaN
    threshold compares false with everything and selects nothing, silently; an infinite learning
    rate trains to NaN. ``click.FloatRange`` alone lets both through (NaN passes every bound).
    """

    name = "float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number (nan and inf are refused)", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()


def finite_float(min: float | None = None, max: float | None = None, *, min_open: bool = False,
                 max_open: bool = False) -> FiniteFloat:
    """The param type of a float option: finite, and within [min, max] when they are given."""
    return FiniteFloat(min=min, max=max, min_open=min_open, max_open=max_open)


#: a float option with no bounds, finite
FINITE_FLOAT = finite_float()


# -- option bundles ---------------------------------------------------------------------------

def input_argument(name: str = "input", required: bool = False):
    """A positional input path; ``-`` or nothing means stdin."""
    return click.argument(name, required=required, default="-" if not required else None, metavar="[STREAM]"
                          if not required else "STREAM", type=click.Path(dir_okay=False, allow_dash=True))


def output_options(default_format: str = "msgpack"):
    """``-o/--output``, ``--format {msgpack,jsonl}``, ``--uncompressed``."""

    def decorate(function):
        function = click.option("--uncompressed", is_flag=True,
                                help="Write msgpack without zstd compression.")(function)
        function = click.option("--format", "fmt", type=click.Choice(["msgpack", "jsonl"]), default=default_format,
                                show_default=True, help="Output encoding: msgpack (+zstd) or JSON lines.")(function)
        function = click.option("-o", "--output", default="-", show_default=True,
                                type=click.Path(dir_okay=False, allow_dash=True),
                                help="Output file; '-' is stdout. Written under a temporary name and "
                                     "renamed when complete; an existing OUTPUT only with --force.")(function)
        return function

    return decorate


FORCE_HELP = ("Replace OUTPUT if it exists, atomically; only an output this suite wrote is replaced, never an "
              "input or a file or directory moetools did not write (moe-formats(5), OUTPUTS).")


def path_inputs(ctx, exclude=("output",)) -> list[str]:
    """Every path the command was given (its click.Path parameters but ``exclude``): what -o must not touch."""
    found = []
    for param in ctx.command.params:
        if param.name in exclude or not isinstance(param.type, click.Path):
            continue
        value = ctx.params.get(param.name)
        for item in (value if isinstance(value, (tuple, list)) else (value,)):
            if item not in (None, "-", ""):
                found.append(os.fspath(item))
    return found


def output_guard(directory: bool = False, *, resume_flag: str | None = None, continues: bool = False,
                 pass_force: bool = False, extra_inputs=None, force_help: str = FORCE_HELP):
    """``--force`` and the suite's rule for ``-o`` (moetools.streams.outputs.check_output), checked before
    the command runs: never an input (nor an ancestor or a descendant of one); an existing output only
    with --force, and only one this suite wrote.

    ``resume_flag``: the name of a flag (``resume``) with which an existing output of the suite is
    continued; ``continues``: an existing output of the suite is always continued (moe-explain), and
    --force starts it over; ``pass_force``: the command takes ``force`` itself; ``extra_inputs(params)``:
    input paths that are not click.Path parameters.
    """
    from ..streams.outputs import check_not_an_input, check_output

    def decorate(function):
        @functools.wraps(function)
        def guarded(*args, **kwargs):
            ctx = click.get_current_context()
            inputs = path_inputs(ctx) + list(extra_inputs(ctx.params) if extra_inputs else [])
            force = kwargs["force"] if pass_force else kwargs.pop("force")
            resume = bool(kwargs.get(resume_flag)) if resume_flag else (continues and not force)
            if resume and directory:  # a training run's directory: the tool checks that it holds its checkpoint
                check_not_an_input(kwargs.get("output"), inputs)
            else:
                check_output(kwargs.get("output"), inputs=inputs, force=force, directory=directory, resume=resume)
            return function(*args, **kwargs)

        return click.option("--force", is_flag=True, help=force_help)(guarded)

    return decorate


# -- opening inputs and outputs (the library's moetools.streams.files, with the CLI's tool info) --------

def read_input(path, kinds=None, *, validate: bool = False):
    """Open ``path`` (or stdin) as a :class:`moetools.streams.StreamReader`."""
    return files.read_input(path, kinds, validate=validate)


def tool_info(extra_params: dict | None = None) -> dict:
    """The ``tool`` field of a header: name, version and the arguments as parsed (secrets removed)."""
    ctx = click.get_current_context(silent=True)
    params = dict(ctx.params) if ctx is not None else {}
    params.update(extra_params or {})
    clean = {}
    for key, value in params.items():
        if key in SECRET_PARAMS:
            continue
        if isinstance(value, (tuple, list)):
            value = [str(v) if isinstance(v, os.PathLike) else v for v in value]
        elif isinstance(value, os.PathLike):
            value = str(value)
        clean[key] = value
    return {"name": state.tool, "version": __version__, "args": clean}


def open_stream_writer(path, kind: str, fmt: str = "msgpack", uncompressed: bool = False, **kwargs):
    """:func:`moetools.streams.files.open_stream_writer` with this command's ``tool`` field."""
    kwargs.setdefault("tool", tool_info())
    return files.open_stream_writer(path, kind, fmt, uncompressed, **kwargs)


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, **kwargs) -> None:
        pass


def _speed(task) -> float | None:
    """A rich task's rate: rich's own over its last 30 s, else the average since the start (so that a rate and
    an ETA show from the first update)."""
    speed = task.finished_speed or task.speed
    if speed is None and task.completed and task.elapsed:
        speed = task.completed / task.elapsed
    return speed


class _RichProgress:
    """A rich bar on stderr: done/total (bytes in kB/MB/GB), rate, ETA (with a total) and elapsed time."""

    def __init__(self, description: str, total: float | None, unit: str = ""):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
        from rich.text import Text

        from ..progress import format_amount, format_duration

        label = "" if unit in ("", "bytes") else f" {unit}"

        class Done(ProgressColumn):
            def render(self, task):
                total = f"/{format_amount(task.total, unit)}" if task.total is not None else "/?"
                return Text(f"{format_amount(task.completed, unit)}{total}{label}")

        class Rate(ProgressColumn):
            def render(self, task):
                speed = _speed(task)
                if speed is None:
                    return Text("")
                return Text(f"{format_amount(speed, unit)}/s" if unit == "bytes" else
                            f"{speed:.1f}{label or ' items'}/s")

        class Remaining(ProgressColumn):
            max_refresh = 0.5

            def render(self, task):
                if task.total is None:
                    return Text("")
                speed = _speed(task)
                left = 0.0 if task.finished else None if not speed else (task.total - task.completed) / speed
                return Text("ETA " + ("-:--:--" if left is None else format_duration(left)))

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), Done(), Rate(), Remaining(),
                                  TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self._description, self._total = description, total

    def __enter__(self):
        self._progress.__enter__()
        self._task = self._progress.add_task(self._description, total=self._total)
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task, amount)

    def update(self, **kwargs) -> None:
        self._progress.update(self._task, **kwargs)


#: seconds between two progress lines when stderr is not a terminal (a SLURM log), and the clock that
#: measures them (a test moves its own)
LOG_PROGRESS_INTERVAL = 60.0
log_progress_clock = time.monotonic


def progress(description: str, total: float | None = None, unit: str = ""):
    """Progress on stderr unless ``-q``: on a terminal a rich bar (done/total, rate, ETA); otherwise, for a
    log file, one line ``tool: description: done/total, rate, ETA`` a minute at most (none in the first)."""
    if state.quiet:
        return _NoProgress()
    if hasattr(sys.stderr, "isatty") and sys.stderr.isatty():
        return _RichProgress(description, total, unit)
    from ..progress import LineProgress

    def write(line: str) -> None:
        print(f"{state.tool}: {line}", file=sys.stderr, flush=True)

    return LineProgress(description, total, unit, write=write, interval=LOG_PROGRESS_INTERVAL,
                        clock=log_progress_clock)


__all__ = [
    "EXIT_STATUS_TEXT",
    "EXIT_USAGE",
    "FINITE_FLOAT",
    "FORCE_HELP",
    "FiniteFloat",
    "ToolCommand",
    "ToolGroup",
    "finite_float",
    "input_argument",
    "open_input",
    "open_output",
    "open_stream_writer",
    "output_guard",
    "output_options",
    "partial_path",
    "progress",
    "read_input",
    "say",
    "state",
    "subcommand_verbosity",
    "tool",
    "tool_group",
    "tool_info",
    "warn",
]
