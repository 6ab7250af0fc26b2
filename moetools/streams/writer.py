"""Writing a stream: header record, data records, end record (formats/README.md).

    with StreamWriter(out, "trace", tool=tool_info, model=identity) as writer:
        for record in records:
            writer.write(record)          # each a dict with a "type" key
    # leaving the block normally writes the end record; an exception does not,
    # so a reader sees the output as truncated rather than complete.
"""

from __future__ import annotations

from typing import BinaryIO

import msgpack
import zstandard

from ..errors import UsageError
from . import strict_json
from .arrays import json_default, msgpack_default

FORMAT_NAME = "moetools"
FORMAT_VERSION = 1
ENCODINGS = ("msgpack", "jsonl")
#: a zstd frame is closed at the first record boundary after this many uncompressed bytes: a reader
#: downstream sees records at least this often, and a reader's memory is bounded by one frame's output.
DEFAULT_FRAME_BYTES = 4 << 20
#: the most uncompressed bytes one zstd frame may hold: a reader holds a frame's bytes until the frame's
#: checksum is verified (formats/README.md, "zstd framing"), so it refuses larger frames. A record that
#: would carry a frame past it starts a new frame; a single record larger than it cannot be compressed.
MAX_FRAME_BYTES = 256 << 20
#: zstd level 1: on trace-shaped data (mostly float16) level 3 saves ~4 % of the bytes but writes at
#: about half the speed, under the 200 MB/s target on one core (bench/bench_streams.py).
DEFAULT_LEVEL = 1


def make_header(kind: str, *, tool: dict | None = None, model: dict | None = None, **extra) -> dict:
    header = {"type": "header", "format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": kind,
              "tool": tool or {}, "model": model}
    header.update(extra)
    return header


class StreamWriter:
    """One segment of a stream on a binary file object.

    ``encoding`` is ``"msgpack"`` (zstd-compressed unless ``compress=False``) or
    ``"jsonl"``. ``header_extra`` fields are added to the header record; keyword
    arguments to :meth:`close` are added to the end record. ``header`` writes a
    given header record verbatim instead (``moe-cat`` passing a segment through;
    ``tool``, ``model`` and ``header_extra`` are then ignored). Records go to ``out``
    as they are written (compressed ones one zstd frame of ``frame_bytes`` at a
    time), so memory does not grow with the stream.
    """

    def __init__(self, out: BinaryIO, kind: str, *, tool: dict | None = None, model: dict | None = None,
                 encoding: str = "msgpack", compress: bool = True, level: int = DEFAULT_LEVEL,
                 frame_bytes: int = DEFAULT_FRAME_BYTES, header_extra: dict | None = None,
                 header: dict | None = None):
        if encoding not in ENCODINGS:
            raise UsageError(f"unknown stream encoding {encoding!r} (choose from {', '.join(ENCODINGS)})")
        if not isinstance(kind, str) or not kind:
            raise UsageError("a stream needs a non-empty kind")
        self.out = out
        self.kind = kind
        self.encoding = encoding
        self.count = 0
        self.closed = False
        self._frame_bytes = max(1, int(frame_bytes))
        self._in_frame = 0  # uncompressed bytes given to the current zstd frame
        self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True) \
            if (encoding == "msgpack" and compress) else None
        self._frame = None  # the open zstd compressobj, if any
        # True while bytes are on their way from the compressor to ``out``: an exception (Ctrl-C)
        # that lands there leaves the open frame without some of its bytes, and closing the frame then
        # would write a checksum over data that was never written. abandon() leaves such a frame
        # unfinished instead: the output reads as truncated at that frame, every record before it intact.
        self._torn = False
        self._packer = msgpack.Packer(default=msgpack_default, use_bin_type=True)
        if header is None:
            header = make_header(kind, tool=tool, model=model, **(header_extra or {}))
        elif not isinstance(header, dict) or header.get("type") != "header" or header.get("kind") != kind:
            raise ValueError(f"header= must be a header record of kind {kind!r}")
        self.header = header
        self._emit(self.header)

    # -- encoding --------------------------------------------------------------------------
    def _encode(self, record: dict) -> bytes:
        try:
            if self.encoding == "jsonl":
                return (strict_json.dumps(record, default=json_default, ensure_ascii=False, separators=(",", ":"))
                        + "\n").encode("utf-8")
            return self._packer.pack(record)
        except strict_json.NonFiniteJSONError as error:
            raise strict_json.NonFiniteJSONError(f"{record.get('type')!r} record: {error}") from None
        except (TypeError, ValueError, OverflowError) as error:
            # a programming error in the producing tool, reported without a half-written record
            raise ValueError(f"cannot encode {record.get('type')!r} record: {error}") from None

    def _emit(self, record: dict) -> None:
        data = self._encode(record)
        if self._torn:
            raise ValueError("write to a StreamWriter after a failed write")
        if self._compressor is None:
            self._torn = True
            self.out.write(data)
            self._torn = False
            return
        if len(data) > MAX_FRAME_BYTES:
            raise ValueError(f"cannot write a {record.get('type')!r} record of {len(data)} bytes: a zstd stream's "
                             f"records are at most {MAX_FRAME_BYTES} bytes (write it uncompressed)")
        if self._in_frame and self._in_frame + len(data) > MAX_FRAME_BYTES:
            self._end_frame()
        if self._frame is None:
            self._frame = self._compressor.compressobj(size=-1)
        self._torn = True
        compressed = self._frame.compress(data)
        if compressed:
            self.out.write(compressed)
        self._torn = False
        self._in_frame += len(data)
        if self._in_frame >= self._frame_bytes:
            self._end_frame()

    def _end_frame(self) -> None:
        if self._frame is not None:
            self._torn = True
            self.out.write(self._frame.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))
            self._frame = None
            self._in_frame = 0
            self._torn = False

    # -- public ----------------------------------------------------------------------------
    def write(self, record: dict) -> None:
        """Write one data record (a dict whose ``type`` is a string other than ``header``/``end``)."""
        if self.closed:
            raise ValueError("write to a closed StreamWriter")
        kind = record.get("type") if isinstance(record, dict) else None
        if not isinstance(kind, str) or kind in ("header", "end"):
            raise ValueError(f"a data record needs a 'type' other than header/end, got {kind!r}")
        self._emit(record)
        self.count += 1

    def flush(self) -> None:
        """End the current zstd frame and flush ``out``, so a reader downstream sees every record now."""
        self._end_frame()
        self.out.flush()

    def close(self, **end_extra) -> None:
        """Write the end record (record count + ``end_extra``) and flush. Idempotent."""
        if self.closed:
            return
        end = {"type": "end", "count": self.count}
        end.update(end_extra)
        end["count"] = self.count
        self._emit(end)
        self.closed = True
        self.flush()

    def abandon(self) -> None:
        """Flush what was written without an end record: the output reads as truncated.

        The open zstd frame is closed (its records kept) unless the exception came
        between compressing and writing (``_torn``): that frame is then left
        unfinished, so a reader sees truncation there, never a frame whose checksum
        disagrees with its bytes. Errors of the output itself (a closed pipe) are
        ignored: the caller is already handling the error that made it abandon the stream.
        """
        if not self.closed:
            self.closed = True
            try:
                if self._torn:
                    self._frame = None
                    self.out.flush()
                else:
                    self.flush()
            except (OSError, ValueError):
                pass

    def __enter__(self) -> StreamWriter:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()
