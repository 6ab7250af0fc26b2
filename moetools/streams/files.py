"""Opening inputs and creating outputs: the one place that knows ``-``, ``.partial`` and rename.

    with open_input("trace.msgpack.zst") as source:           # or "-" for stdin
        reader = StreamReader(source, kinds="trace")

    reader = read_input("-", kinds="trace", validate=True)   # StreamReader on a path or stdin

    with create_output("labels.jsonl") as handle:             # temporary name, renamed when complete
        handle.write(b"...")

    with open_stream_writer("out.msgpack.zst", "samples", tool=tool, model=model) as writer:
        writer.write({"type": "expert", ...})                  # end record + rename on success

    with create_directory("out/checkpoint") as partial:       # a directory: NAME.partial/, then swapped in
        save_file(tensors, str(partial / "model.safetensors"))

An output is written to ``NAME.partial`` beside its target, fsync'd and renamed over
the target only when the block ends without an exception; on an exception the
temporary file is removed, or kept (``keep_partial=True``) for tools that resume from
it. ``-`` (or None) is standard input/output. Nothing here imports click: the CLI and
Python callers use the same functions.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import UsageError

STDIO = (None, "-")


def is_stdio(path) -> bool:
    return path in STDIO


def binary_stream(name: str) -> BinaryIO:
    """``sys.stdin``/``sys.stdout`` as bytes (whatever object the caller installed there)."""
    stream = getattr(sys, name)
    return getattr(stream, "buffer", stream)


def _is_terminal(stream) -> bool:
    return stream is not None and hasattr(stream, "isatty") and stream.isatty()


def open_input(path: str | os.PathLike | None) -> BinaryIO:
    """A binary file for ``path``; ``-``/None is stdin (refused when it is a terminal).

    The file is returned open; use it in a ``with`` block or close it yourself
    (stdin is returned as is and closing it is harmless to the caller's process).
    """
    if is_stdio(path):
        if _is_terminal(sys.stdin):
            raise UsageError("no input: give a path or pipe a stream into standard input")
        return binary_stream("stdin")
    try:
        return open(path, "rb")  # the caller owns the handle
    except FileNotFoundError:
        raise UsageError(f"cannot open {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"cannot open {path}: is a directory") from None
    except PermissionError:
        raise UsageError(f"cannot open {path}: permission denied") from None


def open_text_input(path: str | os.PathLike | None, encoding: str = "utf-8", errors: str = "strict"):
    """:func:`open_input` as text (corpora, JSON files); ``-`` is stdin."""
    return io.TextIOWrapper(open_input(path), encoding=encoding, errors=errors)


def read_input(path, kinds=None, *, validate: bool = False):
    """Open ``path`` (or stdin) as a :class:`moetools.streams.StreamReader`.

    ``validate=True`` checks every header and record against the schema of its
    kind (:mod:`moetools.streams.schema`), as ``moe-cat --check`` does.
    """
    from .reader import StreamReader

    name = None if is_stdio(path) else str(path)
    return StreamReader(open_input(path), kinds=kinds, name=name, validate=validate)


def partial_path(target: str | os.PathLike) -> Path:
    """Where an output is written until it is complete: ``NAME.partial`` beside it."""
    target = Path(target)
    return target.with_name(target.name + ".partial")


def check_output_directory(path: str | os.PathLike) -> Path:
    """``path`` as a Path whose parent directory exists (else a :class:`UsageError`)."""
    target = Path(path)
    if target.parent and not target.parent.exists():
        raise UsageError(f"cannot write {path}: directory {target.parent} does not exist")
    return target


@contextlib.contextmanager
def create_output(path: str | os.PathLike | None, *, binary_ok_on_tty: bool = False,
                  keep_partial: bool = False, append_partial: bool = False) -> Iterator[BinaryIO]:
    """A binary output: stdout for ``-``/None, else ``NAME.partial`` renamed over ``path`` on success.

    On an exception the temporary file is removed (or kept, with ``keep_partial``,
    for tools that resume from it) and ``path`` is left untouched. An interrupt
    (KeyboardInterrupt: Ctrl-C) always keeps it: the one rule of every tool
    (moetools.cli.common.EXIT_STATUS_TEXT), as SIGTERM and SIGKILL, which end the
    process at once, do too.
    ``append_partial`` opens an existing ``.partial`` for appending (resume).
    """
    if is_stdio(path):
        stdout = binary_stream("stdout")
        if not binary_ok_on_tty and _is_terminal(sys.stdout):
            raise UsageError("refusing to write a binary stream to a terminal: use -o FILE, a pipe, "
                             "or --format jsonl")
        yield stdout
        stdout.flush()
        return
    target = check_output_directory(path)
    temporary = partial_path(target)
    handle = open(temporary, "ab" if append_partial else "wb")  # noqa: SIM115 - closed below
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(temporary, target)
    except BaseException as error:
        handle.close()
        if not (keep_partial or isinstance(error, KeyboardInterrupt)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        raise


@contextlib.contextmanager
def create_directory(path: str | os.PathLike, *, tool: str | None = None) -> Iterator[Path]:
    """A directory output (a checkpoint, a model copy): yields ``NAME.partial/``, swapped in for ``path`` on success.

    ``NAME.partial/`` is made (parents too; its files get the modes the umask gives) with the suite's marker
    (:data:`moetools.streams.outputs.MARKER`), after removing a stale one the suite wrote. On
    success it is exchanged atomically with an existing ``path``
    (:func:`moetools.streams.outputs.publish_directory`: a kill at any moment leaves the old or the
    new directory complete), and the old one is removed. Whether ``path`` may be replaced at all is
    the caller's question (:func:`moetools.streams.outputs.check_output`). On an exception
    ``NAME.partial/`` is removed (kept on an interrupt, as :func:`create_output` does) and ``path``
    is left untouched.
    """
    from .outputs import (
        apply_umask,
        publish_directory,
        recover_directory,
        remove_suite_directory,
        write_marker,
    )

    target = Path(path)
    recover_directory(target)
    temporary = partial_path(target)
    remove_suite_directory(temporary)
    temporary.mkdir(parents=True)
    write_marker(temporary, tool)
    try:
        yield temporary
    except BaseException as error:
        if not isinstance(error, KeyboardInterrupt):
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    apply_umask(temporary)  # safetensors writes 0600: the modes any new file gets (0644 under umask 022)
    publish_directory(temporary, target)


def write_file_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write a whole small file (JSON, safetensors bytes) under a temporary name, then rename."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with create_output(path) as handle:
        handle.write(data)


@contextlib.contextmanager
def open_stream_writer(path, kind: str, fmt: str = "msgpack", uncompressed: bool = False, *,
                       tool: dict | None = None, model: dict | None = None,
                       header_extra: dict | None = None, keep_partial: bool = False,
                       level: int | None = None, handle: BinaryIO | None = None):
    """Create ``path`` atomically and yield a :class:`StreamWriter` with its header written.

    Leaving the block normally writes the end record (plus ``writer.end_extra``)
    and renames the file into place; an exception abandons the stream (no end
    record) and leaves no complete-looking output behind. ``handle`` writes to an
    already open binary file instead of creating ``path`` (resume appends).
    """
    from .writer import DEFAULT_LEVEL, StreamWriter

    opened = contextlib.nullcontext(handle) if handle is not None else \
        create_output(path, binary_ok_on_tty=(fmt == "jsonl"), keep_partial=keep_partial)
    with opened as out:
        writer = StreamWriter(out, kind, tool=tool, model=model, encoding=fmt, compress=not uncompressed,
                              level=DEFAULT_LEVEL if level is None else level, header_extra=header_extra)
        try:
            yield writer
        except BaseException:
            writer.abandon()
            raise
        writer.close(**getattr(writer, "end_extra", {}))


def file_sha256(path: str | os.PathLike) -> str:
    """``sha256:HEX`` of a file's bytes, read 1 MiB at a time: how moe-mask records the experts.json it masked
    and moe-report the sets it shows (formats/mask.md), so that the two can be compared."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


__all__ = ["binary_stream", "check_output_directory", "create_directory", "create_output", "file_sha256", "is_stdio",
           "open_input",
           "open_stream_writer", "open_text_input", "partial_path", "read_input", "write_file_atomic"]
