"""Reading a stream: auto-detected encoding, segments, truncation and model checks.

    reader = StreamReader(open("trace.msgpack.zst", "rb"), kinds="trace")
    reader.header            # the first segment's header record
    for record in reader:    # data records of every segment, arrays as numpy views
        ...
    reader.ends              # the end records seen, one per segment

Iteration raises :class:`TruncatedStreamError` when the input stops before an
end record (or inside a record or zstd frame), :class:`ModelMismatchError` when a
later segment's header names another model, and :class:`FormatError` for
anything else that is not a valid stream. Memory stays bounded by one chunk of
input plus one record, whatever the stream's length.
"""

from __future__ import annotations

import json
from typing import BinaryIO, Iterable, Iterator

import msgpack
import zstandard

from ..errors import FormatError, KindError, ModelMismatchError, TruncatedStreamError, VersionError
from .arrays import json_object_hook, msgpack_object_hook
from .writer import FORMAT_NAME, FORMAT_VERSION

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK_BYTES = 1 << 20
_MAX_RECORD_BYTES = 1 << 31


def detect_encoding(prefix: bytes) -> str:
    """``"zstd"``, ``"msgpack"`` or ``"jsonl"`` from the first bytes of a stream."""
    if not prefix:
        raise TruncatedStreamError("empty input: no header record")
    if prefix.startswith(ZSTD_MAGIC):
        return "zstd"
    if len(prefix) < len(ZSTD_MAGIC) and ZSTD_MAGIC.startswith(prefix):
        raise TruncatedStreamError("input ends inside the zstd magic number")
    first = prefix[0]
    if first == ord("{"):
        return "jsonl"
    if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF):
        return "msgpack"
    raise FormatError("not a moetools stream (expected zstd, msgpack or JSON lines)")


def _read_chunks(source: BinaryIO, first: bytes) -> Iterator[bytes]:
    if first:
        yield first
    while True:
        chunk = source.read(CHUNK_BYTES)
        if not chunk:
            return
        yield chunk


def _zstd_frames(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress concatenated zstd frames, refusing an unfinished last frame."""
    dctx = zstandard.ZstdDecompressor()
    decoder = dctx.decompressobj()
    inside_frame = False
    for chunk in chunks:
        while chunk:
            try:
                out = decoder.decompress(chunk)
            except zstandard.ZstdError as error:
                raise FormatError(f"corrupt zstd frame: {error}") from None
            inside_frame = True
            if out:
                yield out
            if decoder.eof:
                chunk = decoder.unused_data
                decoder = dctx.decompressobj()
                inside_frame = False
                if chunk and not chunk.startswith(ZSTD_MAGIC[: len(chunk)]):
                    raise FormatError("bytes after a zstd frame that are not another zstd frame")
            else:
                chunk = b""
    if inside_frame:
        raise TruncatedStreamError("input ends inside a zstd frame")


def _msgpack_records(chunks: Iterable[bytes]) -> Iterator[dict]:
    unpacker = msgpack.Unpacker(raw=False, object_hook=msgpack_object_hook, strict_map_key=False,
                                max_buffer_size=_MAX_RECORD_BYTES)
    fed = 0
    for chunk in chunks:
        unpacker.feed(chunk)
        fed += len(chunk)
        try:
            yield from unpacker
        except FormatError:
            raise
        except (ValueError, TypeError, msgpack.UnpackException) as error:
            raise FormatError(f"corrupt msgpack record: {error}") from None
    if unpacker.tell() < fed:
        raise TruncatedStreamError("input ends inside a msgpack record")


def _jsonl_records(chunks: Iterable[bytes]) -> Iterator[dict]:
    pending = b""
    line_number = 0
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            line_number += 1
            if line.strip():
                yield _parse_json_line(line, line_number)
    if pending.strip():
        # every record ends with "\n": a last line without one was cut short
        raise TruncatedStreamError(f"input ends inside a JSON line (line {line_number + 1} has no newline)")


def _parse_json_line(line: bytes, line_number: int) -> dict:
    try:
        return json.loads(line, object_hook=json_object_hook)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FormatError(f"line {line_number}: not valid JSON ({error})") from None


def check_header(header, *, kinds: tuple[str, ...] | None = None) -> dict:
    """Validate a header record; returns it."""
    if not isinstance(header, dict) or header.get("type") != "header":
        raise FormatError("stream does not start with a header record")
    if header.get("format") != FORMAT_NAME:
        raise FormatError(f"header format is {header.get('format')!r}, expected {FORMAT_NAME!r}")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise FormatError("header has no integer version")
    if version > FORMAT_VERSION or version < 1:
        raise VersionError(f"stream format version {version} is not supported by this reader "
                           f"(supports 1..{FORMAT_VERSION}); upgrade moetools")
    kind = header.get("kind")
    if not isinstance(kind, str) or not kind:
        raise FormatError("header has no kind")
    if kinds and kind not in kinds:
        raise KindError(f"expected a {' or '.join(kinds)} stream, got a {kind} stream")
    return header


def model_fingerprint(header: dict):
    model = header.get("model")
    return model.get("fingerprint") if isinstance(model, dict) else None


def check_compatible(first: dict, later: dict, segment: int) -> None:
    """Concatenated segments must agree on kind and model (formats/README.md, "Concatenation")."""
    if later["kind"] != first["kind"]:
        raise KindError(f"segment {segment} is a {later['kind']} stream, segment 1 a {first['kind']} stream")
    if model_fingerprint(later) != model_fingerprint(first):
        name_a = (first.get("model") or {}).get("name")
        name_b = (later.get("model") or {}).get("name")
        raise ModelMismatchError(
            f"segment {segment} comes from another model than segment 1 "
            f"({name_b!r} {model_fingerprint(later)} vs {name_a!r} {model_fingerprint(first)}); "
            "refusing to mix models in one stream")


class StreamReader:
    """Iterate the data records of a (possibly concatenated) stream."""

    def __init__(self, source: BinaryIO, *, kinds: str | tuple[str, ...] | None = None):
        self.kinds = (kinds,) if isinstance(kinds, str) else kinds
        first = source.read(CHUNK_BYTES)
        self.encoding = detect_encoding(first)
        chunks = _read_chunks(source, first)
        if self.encoding == "zstd":
            self._records = _msgpack_records(_zstd_frames(chunks))
        elif self.encoding == "msgpack":
            self._records = _msgpack_records(chunks)
        else:
            self._records = _jsonl_records(chunks)
        self.headers: list[dict] = []
        self.ends: list[dict] = []
        self._in_segment = False
        self._segment_count = 0
        try:
            header = next(self._records)
        except StopIteration:
            raise TruncatedStreamError("empty input: no header record") from None
        self._start_segment(header)

    @property
    def header(self) -> dict:
        return self.headers[0]

    @property
    def count(self) -> int:
        """Data records declared by the end records read so far."""
        return sum(end.get("count", 0) for end in self.ends)

    def _start_segment(self, header) -> None:
        check_header(header, kinds=self.kinds)
        if self.headers:
            check_compatible(self.headers[0], header, len(self.headers) + 1)
        self.headers.append(header)
        self._in_segment = True
        self._segment_count = 0

    def records(self, *, control: bool = False) -> Iterator[dict]:
        """All records; with ``control=True`` the header and end records too, in stream order."""
        if control:
            yield self.headers[0]
        for record in self._records:
            if not isinstance(record, dict):
                raise FormatError(f"record is a {type(record).__name__}, not a map")
            kind = record.get("type")
            if not self._in_segment:
                self._start_segment(record)
                if control:
                    yield record
                continue
            if kind == "header":
                raise FormatError(f"header record inside segment {len(self.headers)} (missing end record)")
            if kind == "end":
                declared = record.get("count")
                if declared != self._segment_count:
                    raise FormatError(f"end record declares {declared} records, segment "
                                      f"{len(self.headers)} holds {self._segment_count}")
                self.ends.append(record)
                self._in_segment = False
                if control:
                    yield record
                continue
            if not isinstance(kind, str):
                raise FormatError("record has no 'type'")
            self._segment_count += 1
            yield record
        if self._in_segment:
            raise TruncatedStreamError(
                f"stream ends without an end record after {self._segment_count} records "
                f"of segment {len(self.headers)} (truncated?)")

    def __iter__(self) -> Iterator[dict]:
        return self.records()


def read_stream(source: BinaryIO, kinds: str | tuple[str, ...] | None = None) -> StreamReader:
    return StreamReader(source, kinds=kinds)
