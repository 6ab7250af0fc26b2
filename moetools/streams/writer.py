"""Writing a stream: header record, data records, end record (formats/README.md).

    with StreamWriter(out, "trace", tool=tool_info, model=identity) as writer:
        for record in records:
            writer.write(record)          # each a dict with a "type" key
    # leaving the block normally writes the end record; an exception does not,
    # so a reader sees the output as truncated rather than complete.
"""

from __future__ import annotations

import json
from typing import BinaryIO

import msgpack
import zstandard

from ..errors import UsageError
from .arrays import json_default, msgpack_default

FORMAT_NAME = "moetools"
FORMAT_VERSION = 1
ENCODINGS = ("msgpack", "jsonl")
#: a zstd frame is closed after this many uncompressed bytes (bounded memory, early reads downstream)
DEFAULT_FRAME_BYTES = 4 << 20
DEFAULT_LEVEL = 3


def make_header(kind: str, *, tool: dict | None = None, model: dict | None = None, **extra) -> dict:
    header = {"type": "header", "format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": kind,
              "tool": tool or {}, "model": model}
    header.update(extra)
    return header


class StreamWriter:
    """One segment of a stream on a binary file object.

    ``encoding`` is ``"msgpack"`` (zstd-compressed unless ``compress=False``) or
    ``"jsonl"``. ``header_extra`` fields are added to the header record; keyword
    arguments to :meth:`close` are added to the end record.
    """

    def __init__(self, out: BinaryIO, kind: str, *, tool: dict | None = None, model: dict | None = None,
                 encoding: str = "msgpack", compress: bool = True, level: int = DEFAULT_LEVEL,
                 frame_bytes: int = DEFAULT_FRAME_BYTES, header_extra: dict | None = None):
        if encoding not in ENCODINGS:
            raise UsageError(f"unknown stream encoding {encoding!r} (choose from {', '.join(ENCODINGS)})")
        self.out = out
        self.kind = kind
        self.encoding = encoding
        self.count = 0
        self.closed = False
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._frame_bytes = frame_bytes
        self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True) \
            if (encoding == "msgpack" and compress) else None
        self._packer = msgpack.Packer(default=msgpack_default, use_bin_type=True)
        self.header = make_header(kind, tool=tool, model=model, **(header_extra or {}))
        self._emit(self.header)

    # -- encoding --------------------------------------------------------------------------
    def _encode(self, record: dict) -> bytes:
        if self.encoding == "jsonl":
            return (json.dumps(record, default=json_default, ensure_ascii=False, separators=(",", ":"))
                    + "\n").encode("utf-8")
        return self._packer.pack(record)

    def _emit(self, record: dict) -> None:
        data = self._encode(record)
        if self._compressor is None and self.encoding == "jsonl":
            self.out.write(data)
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= self._frame_bytes:
            self.flush()

    # -- public ----------------------------------------------------------------------------
    def write(self, record: dict) -> None:
        """Write one data record (a dict whose ``type`` is not ``header``/``end``)."""
        kind = record.get("type")
        if not isinstance(kind, str) or kind in ("header", "end"):
            raise ValueError(f"a data record needs a 'type' other than header/end, got {kind!r}")
        self._emit(record)
        self.count += 1

    def flush(self) -> None:
        """Close the current zstd frame (or push buffered msgpack) so a reader downstream sees it now."""
        if self._buffer:
            payload = b"".join(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            self.out.write(self._compressor.compress(payload) if self._compressor else payload)
        self.out.flush()

    def close(self, **end_extra) -> None:
        """Write the end record (record count + ``end_extra``) and flush. Idempotent."""
        if self.closed:
            return
        self.closed = True
        end = {"type": "end", "count": self.count}
        end.update(end_extra)
        self._emit(end)
        self.flush()

    def abandon(self) -> None:
        """Flush what was written without an end record: the output reads as truncated."""
        if not self.closed:
            self.closed = True
            self.flush()

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()
