"""moe-cat: view, convert, summarise and validate moetools streams (logic: ``moetools.cat``)."""

from __future__ import annotations

import contextlib
import sys

import click

from .. import cat
from ..progress import no_progress
from ..streams import strict_json
from .common import open_input, open_output, output_guard, progress, say, state, tool

EXAMPLE = """\
moe-cat trace.msgpack.zst --head 2 --format jsonl
cat shard-*.trace | moe-cat --summary
moe-cat --check labels.jsonl && echo complete"""


@tool("moe-cat", example=EXAMPLE)
@click.argument("inputs", nargs=-1, metavar="[STREAM]...", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", default="-", show_default=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Output file; '-' is stdout. Written under a temporary name and renamed when complete.")
@click.option("--format", "fmt", type=click.Choice(["msgpack", "jsonl"]), default=None,
              help="Output encoding: msgpack (+zstd) or JSON lines.  [default: the first input's encoding; "
                   "jsonl when writing to a terminal]")
@click.option("--uncompressed", is_flag=True, help="Write msgpack without zstd compression.")
@click.option("--head", type=click.IntRange(min=0), metavar="N",
              help="Stop after N data records (the output is then a complete stream of N records; the rest "
                   "of the input is not read).")
@click.option("--kind", metavar="KIND", help="Refuse input that is not a KIND stream (exit 2), e.g. trace.")
@click.option("--summary", is_flag=True,
              help="Print a JSON summary (segments, records by type, kind, models, producing tools, bytes) "
                   "instead of the records.")
@click.option("--check", is_flag=True,
              help="Validate only: read everything, write nothing; besides the framing, every header, record "
                   "and end record is checked field by field against its kind's spec (formats/KIND.md). Silent "
                   "on success (say 'ok' with -v).")
@output_guard()
def command(inputs, output, fmt, uncompressed, head, kind, summary, check):
    """View, convert, summarise and validate moetools streams.

    Reads each STREAM (a path; '-' or none: standard input) in turn as one
    stream, like cat(1): concatenated segments and several inputs must agree on
    kind and model, else moe-cat refuses them (exit 2). The input encoding
    (msgpack+zstd, plain msgpack, JSON lines) is detected. Records are written
    unchanged in the chosen encoding, each segment with its own header and end
    record; in JSON lines arrays become {"nd", "shape", "values"} objects with
    nested lists.

    A stream that stops before its end record is reported as truncated (exit 3),
    never passed off as complete; with --head only the records needed are read.
    """
    paths = list(inputs) or ["-"]
    if paths.count("-") > 1:
        raise click.UsageError("standard input ('-') can be read only once")
    with contextlib.ExitStack() as stack:
        sources = []
        for path in paths:  # open every input first: a missing file fails before any output
            handle = open_input(path)
            if path != "-":
                stack.enter_context(handle)
            sources.append((None if path == "-" else path, handle))
        if check:
            result = cat.check_streams(sources, kind=kind, progress=progress)
            if state.verbose:
                say(result.line())
            return
        if summary:
            try:
                result = cat.summarize(sources, kind=kind, head=head)
            except cat.SummaryError as failed:
                _write_summary(output, failed.summary)
                raise failed.error from None
            _write_summary(output, result)
            return
        _copy(sources, output, fmt, uncompressed, head, kind)


def _copy(sources, output, fmt, uncompressed, head, kind) -> None:
    to_terminal = output == "-" and sys.stdout.isatty()
    if fmt is None and to_terminal:
        fmt = "jsonl"  # a person is reading: never binary on a terminal unless asked for
    with open_output(output, binary_ok_on_tty=(fmt == "jsonl")) as out:
        cat.copy_streams(sources, out, encoding=fmt, compress=None if (fmt is None and not uncompressed)
                         else not uncompressed, head=head, kind=kind,
                         progress=no_progress if to_terminal else progress)  # no bar over the records shown


def _write_summary(output, result: cat.Summary) -> None:
    with open_output(output, binary_ok_on_tty=True) as out:
        out.write((strict_json.dumps(result.as_dict(), indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


main = command.main
