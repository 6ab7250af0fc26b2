"""moe-cat's logic: walk one or more streams as one, copy/convert, summarise, validate.

Usable without the CLI::

    from moetools.cat import copy_streams, summarize
    from moetools.streams.files import create_output, open_input
    with open_input("a.zst") as a, open_input("b.zst") as b, create_output("ab.jsonl") as out:
        copy_streams([("a.zst", a), ("b.zst", b)], out, encoding="jsonl")

Several inputs read as their concatenation (``cat a b | moe-cat``): every
segment must agree with the first on kind and model fingerprint
(formats/README.md, "Concatenation"). Segments are passed through: each keeps
its own header and end record (the end record's count is recomputed when
``head`` stops inside a segment).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from ..errors import MoetoolsError
from ..progress import ProgressFactory, no_progress
from ..streams import StreamReader, StreamWriter, check_compatible

#: (name shown in messages, binary file) of one input; name None for stdin
Source = tuple["str | None", BinaryIO]


@dataclass
class Summary:
    """What ``moe-cat --summary`` reports (and ``--check -v`` says)."""

    inputs: list = field(default_factory=list)
    encodings: list = field(default_factory=list)
    kind: str | None = None
    segments: int = 0
    records: int = 0
    by_type: Counter = field(default_factory=Counter)
    models: list = field(default_factory=list)
    tools: list = field(default_factory=list)
    input_bytes: int = 0
    decoded_bytes: int = 0
    array_bytes: int = 0
    complete: bool = False
    stopped_at_head: bool = False
    error: str | None = None

    def as_dict(self) -> dict:
        result = {
            "inputs": self.inputs, "encodings": self.encodings, "kind": self.kind, "segments": self.segments,
            "records": self.records, "by_type": dict(sorted(self.by_type.items())), "models": self.models,
            "tools": self.tools, "input_bytes": self.input_bytes, "decoded_bytes": self.decoded_bytes,
            "array_bytes": self.array_bytes, "complete": self.complete,
        }
        if self.stopped_at_head:
            result["stopped_at_head"] = True
        if self.error:
            result["error"] = self.error
        return result

    def line(self) -> str:
        """One human line, for ``--check -v``."""
        types = ", ".join(f"{count} {name}" for name, count in sorted(self.by_type.items())) or "no data records"
        return (f"ok: {self.kind} stream, {self.segments} segment(s), {self.records} records ({types}), "
                f"{self.input_bytes} bytes")

    # -- accumulation ---------------------------------------------------------------------
    def _header(self, header: dict) -> None:
        self.segments += 1
        self.kind = header.get("kind")
        model = header.get("model") if isinstance(header.get("model"), dict) else {}
        identity = {"name": model.get("name"), "fingerprint": model.get("fingerprint")}
        for known in self.models:
            if {"name": known["name"], "fingerprint": known["fingerprint"]} == identity:
                known["segments"] += 1
                break
        else:
            self.models.append({**identity, "segments": 1})
        tool = header.get("tool") if isinstance(header.get("tool"), dict) else {}
        producer = {"name": tool.get("name"), "version": tool.get("version")}
        if producer not in self.tools:
            self.tools.append(producer)

    def _record(self, record: dict) -> None:
        self.records += 1
        self.by_type[record["type"]] += 1
        self.array_bytes += _array_bytes(record)


def _array_bytes(value) -> int:
    """Raw payload bytes of every array inside a record (the bulk of a trace)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(_array_bytes(item) for item in value.values())
    if isinstance(value, list):
        return sum(_array_bytes(item) for item in value)
    return 0


def walk(sources: Iterable[Source], *, kind: str | None = None, summary: Summary | None = None,
         validate: bool = False) -> Iterator[tuple[str, dict]]:
    """``("header" | "record" | "end", record)`` for every record of every input, in order.

    ``validate=True`` also checks every header, record and end record against the
    schema of its kind (:func:`moetools.streams.schema.schema_for`), as ``--check`` does.

    Raises the reader's typed errors (truncation, corruption, kind, version) and
    :class:`ModelMismatchError` when an input's segment disagrees with the first
    segment of the first input.
    """
    summary = summary if summary is not None else Summary()
    first_header = None
    for name, source in sources:
        summary.inputs.append(name or "-")
        reader = StreamReader(source, kinds=kind, name=name, validate=validate)
        summary.encodings.append(reader.encoding)
        try:
            for record in reader.records(control=True):
                record_type = record.get("type")
                if record_type == "header":
                    if first_header is None:
                        first_header = record
                    else:
                        with reader._naming_errors():
                            check_compatible(first_header, record, summary.segments + 1)
                    summary._header(record)
                    yield "header", record
                elif record_type == "end":
                    yield "end", record
                else:
                    summary._record(record)
                    yield "record", record
        finally:
            summary.input_bytes += reader.input_bytes
            summary.decoded_bytes += reader.decoded_bytes
    summary.complete = True


#: the output encoding that keeps an input's encoding: StreamWriter (encoding, compress)
SAME_AS_INPUT = {"zstd": ("msgpack", True), "msgpack": ("msgpack", False), "jsonl": ("jsonl", False)}


def copy_streams(sources: Iterable[Source], out: BinaryIO, *, encoding: str | None = "msgpack",
                 compress: bool | None = True, head: int | None = None, kind: str | None = None,
                 summary: Summary | None = None, progress: ProgressFactory = no_progress) -> Summary:
    """Re-encode ``sources`` onto ``out`` segment by segment; ``head`` stops after that many data records.

    ``progress(description)`` (moetools.progress) is advanced per data record copied.

    ``encoding=None`` keeps the first input's encoding; ``compress=None`` keeps
    its compression when the output is msgpack (zstd when the input is JSON lines).

    On an error in the input, the records copied so far are flushed without an
    end record, so that the output reads as truncated too, and the error is raised.
    A segment's end record is passed on only once the input is known to go on
    with another segment or to end there (its last zstd frame verified): input
    damaged after an end record never leaves a complete-looking output.
    """
    summary = summary if summary is not None else Summary()
    writer: StreamWriter | None = None
    pending_end: dict | None = None  # the end record of the segment just read, not yet passed on
    written = 0
    with progress("copying records") as bar:
        try:
            for event, record in walk(sources, kind=kind, summary=summary):
                if pending_end is not None:  # the input goes on with the next segment: its end stands
                    writer.close(**pending_end)
                    writer, pending_end = None, None
                if event == "header":
                    if head is not None and written >= head and writer is None and summary.segments > 1:
                        summary.stopped_at_head = True
                        break
                    if encoding is None or compress is None:
                        same_encoding, same_compress = SAME_AS_INPUT[summary.encodings[0]]
                        encoding = encoding or same_encoding
                        if compress is None:
                            compress = same_compress if same_encoding == encoding else True
                    writer = StreamWriter(out, record["kind"], encoding=encoding, compress=compress, header=record)
                elif event == "record":
                    if head is not None and written >= head:
                        summary.stopped_at_head = True
                        break
                    writer.write(record)
                    written += 1
                    bar.advance()
                else:
                    pending_end = {key: value for key, value in record.items() if key not in ("type", "count")}
            if writer is not None:  # the input's end verified, or --head stopped inside a segment (count written)
                writer.close(**(pending_end or {}))
        except BaseException:
            if writer is not None:
                writer.abandon()
            raise
    return summary


def check_streams(sources: Iterable[Source], *, kind: str | None = None,
                  progress: ProgressFactory = no_progress) -> Summary:
    """Read every record (arrays decoded and size-checked, fields checked against the kind's schema:
    formats/<kind>.md); raise on the first problem. ``progress`` is advanced per record read."""
    summary = Summary()
    with progress("checking records") as bar:
        for _ in walk(sources, kind=kind, summary=summary, validate=True):
            bar.advance()
    return summary


def summarize(sources: Iterable[Source], *, kind: str | None = None, head: int | None = None) -> Summary:
    """Like :func:`check_streams`, but a problem is recorded in ``summary.error`` as well as raised.

    The caller can then show what was read before the problem (``moe-cat --summary``).
    """
    summary = Summary()
    try:
        for event, _ in walk(sources, kind=kind, summary=summary):
            if head is not None and event == "record" and summary.records >= head:
                summary.stopped_at_head = True
                break
    except MoetoolsError as error:
        summary.error = str(error)
        raise SummaryError(summary, error) from error
    return summary


class SummaryError(Exception):
    """Carries the partial :class:`Summary` of a stream that failed validation, and the error."""

    def __init__(self, summary: Summary, error: MoetoolsError):
        super().__init__(str(error))
        self.summary = summary
        self.error = error


__all__ = ["Summary", "SummaryError", "check_streams", "copy_streams", "summarize", "walk"]
