"""Reading a stream: auto-detected encoding, segments, truncation and model checks.

    reader = StreamReader(open("trace.msgpack.zst", "rb"), kinds="trace")
    reader.header            # the first segment's header record
    for record in reader:    # data records of every segment, arrays as numpy views
        ...
    reader.ends              # the end records seen, one per segment

Iteration raises :class:`TruncatedStreamError` when the input stops before an
end record (or inside a record or zstd frame), :class:`ModelMismatchError` when a
later segment's header names another model, and :class:`FormatError` for
anything else that is not a valid stream. Records of a zstd stream are returned
only once the checksum of the frame holding them has been verified. Memory stays
bounded by one chunk of input, one zstd frame and one record, whatever the
stream's length.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import msgpack
import zstandard

from ..errors import FormatError, KindError, ModelMismatchError, TruncatedStreamError, VersionError
from .arrays import json_object_hook, msgpack_object_hook
from .schema import schema_for
from .writer import FORMAT_NAME, FORMAT_VERSION, MAX_FRAME_BYTES

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: bytes read from the input at a time
CHUNK_BYTES = 1 << 20
#: compressed bytes given to the zstd decoder at a time: bounds the output of one call
_ZSTD_FEED_BYTES = 128 << 10
#: the largest record the reader accepts (msgpack Unpacker buffer)
MAX_RECORD_BYTES = 1 << 31


def detect_encoding(prefix: bytes) -> str:
    """``"zstd"``, ``"msgpack"`` or ``"jsonl"`` from the first bytes of a stream (formats/README.md)."""
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
    raise FormatError(f"not a moetools stream: first byte 0x{first:02x} starts neither zstd, "
                      "a msgpack map nor a JSON line")


class _Counter:
    """Bytes seen at one layer of the input (for moe-cat --summary)."""

    __slots__ = ("bytes",)

    def __init__(self):
        self.bytes = 0


def _reader(source: BinaryIO):
    """``read1`` where the file has it: what a pipe holds now, not a full chunk (records flow downstream
    as the producer writes them instead of once a MiB has arrived)."""
    return getattr(source, "read1", None) or source.read


def _first_bytes(read) -> bytes:
    """At least the 4 bytes that tell the encoding apart, unless the input is shorter."""
    first = read(CHUNK_BYTES) or b""
    while 0 < len(first) < len(ZSTD_MAGIC):
        more = read(CHUNK_BYTES)
        if not more:
            break
        first += more
    return first


def _read_chunks(read, first: bytes, counter: _Counter) -> Iterator[bytes]:
    if first:
        counter.bytes += len(first)
        yield first
    while True:
        chunk = read(CHUNK_BYTES)
        if not chunk:
            return
        counter.bytes += len(chunk)
        yield chunk


def _zstd_frames(chunks: Iterable[bytes], counter: _Counter) -> Iterator[bytes]:
    """Decompress concatenated zstd frames, handing on each frame's bytes only once its checksum is verified.

    zstd checks a frame's checksum when the frame ends, so the decompressed bytes of a frame
    are held back until then: a damaged frame gives an error, never altered records. Memory is
    bounded by one frame's output (:data:`MAX_FRAME_BYTES`); a larger frame is refused.
    Refuses an unfinished last frame (truncation).
    """
    dctx = zstandard.ZstdDecompressor()
    decoder = dctx.decompressobj()
    inside_frame = False
    held: list[bytes] = []  # the decompressed bytes of the current frame, not verified yet
    held_bytes = 0
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            piece, view = view[:_ZSTD_FEED_BYTES], view[_ZSTD_FEED_BYTES:]
            while piece:
                if not inside_frame and not ZSTD_MAGIC.startswith(bytes(piece[:4])):
                    raise FormatError("bytes after a zstd frame that are not another zstd frame")
                try:
                    out = decoder.decompress(piece)
                except zstandard.ZstdError as error:
                    raise FormatError(f"corrupt zstd frame: {error}") from None
                inside_frame = True
                if out:
                    held.append(out)
                    held_bytes += len(out)
                    if held_bytes > MAX_FRAME_BYTES:
                        raise FormatError(
                            f"a zstd frame decompresses to more than {MAX_FRAME_BYTES >> 20} MiB, the most a "
                            "reader holds before verifying its checksum (formats/README.md); decompress it "
                            "first (zstd -dc FILE | TOOL) or rewrite it in smaller frames")
                if decoder.eof:  # the frame ended and its checksum matched: its bytes can go on
                    for out in held:
                        counter.bytes += len(out)
                        yield out
                    held, held_bytes = [], 0
                    piece = memoryview(decoder.unused_data)
                    decoder = dctx.decompressobj()
                    inside_frame = False
                else:
                    piece = b""
    if inside_frame:
        raise TruncatedStreamError("input ends inside a zstd frame")


def _refuse_ext(code: int, data: bytes):
    raise FormatError(f"msgpack extension type {code} is not allowed in a stream")


def _msgpack_records(chunks: Iterable[bytes]) -> Iterator[dict]:
    unpacker = msgpack.Unpacker(raw=False, object_hook=msgpack_object_hook, ext_hook=_refuse_ext,
                                strict_map_key=False, max_buffer_size=MAX_RECORD_BYTES)
    fed = 0
    for chunk in chunks:
        try:
            unpacker.feed(chunk)
        except msgpack.BufferFull:
            raise FormatError(f"a record larger than {MAX_RECORD_BYTES} bytes") from None
        fed += len(chunk)
        try:
            yield from unpacker
        except FormatError:
            raise
        except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as error:
            raise FormatError(f"corrupt msgpack record: {error}") from None
    if unpacker.tell() < fed:
        raise TruncatedStreamError("input ends inside a msgpack record")


def _jsonl_records(chunks: Iterable[bytes]) -> Iterator[dict]:
    pending: list[bytes] = []  # the start of a line not finished yet
    line_number = 0
    for chunk in chunks:
        cut = chunk.rfind(b"\n")
        if cut < 0:
            pending.append(chunk)
            continue
        complete = b"".join(pending) + chunk[:cut] if pending else chunk[:cut]
        pending = [chunk[cut + 1:]]
        for line in complete.split(b"\n"):
            line_number += 1
            if line.strip():
                yield _parse_json_line(line, line_number)
    if b"".join(pending).strip():
        # every record ends with "\n": a last line without one was cut short
        raise TruncatedStreamError(f"input ends inside a JSON line (line {line_number + 1} has no newline)")


def _parse_json_line(line: bytes, line_number: int) -> dict:
    try:
        return json.loads(line, object_hook=json_object_hook)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise FormatError(f"line {line_number}: not valid JSON ({error})") from None


def check_header(header, *, kinds: tuple[str, ...] | None = None) -> dict:
    """Validate a header record; returns it."""
    if not isinstance(header, dict) or header.get("type") != "header":
        raise FormatError("stream does not start with a header record (a map whose type is \"header\")")
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


def _describe_model(header: dict) -> str:
    model = header.get("model")
    if not isinstance(model, dict):
        return "no model"
    return f"{model.get('name')!r} ({model.get('fingerprint')})"


def check_compatible(first: dict, later: dict, segment: int) -> None:
    """Concatenated segments must agree on kind and model (formats/README.md, "Concatenation")."""
    if later.get("kind") != first.get("kind"):
        raise KindError(f"segment {segment} is a {later.get('kind')} stream, segment 1 a {first.get('kind')} stream")
    if model_fingerprint(later) != model_fingerprint(first):
        schemes = {_fingerprint_scheme(model_fingerprint(header)) for header in (first, later)}
        hint = ("; the two fingerprints are of different identity schemes (moetools 0.1.0 wrote 'sha256:', "
                "later versions 'v2:sha256:'): trace the older segments again" if schemes == {1, 2} else "")
        raise ModelMismatchError(
            f"segment {segment} comes from another model than segment 1: {_describe_model(later)} vs "
            f"{_describe_model(first)}; refusing to mix models in one stream{hint}")
    if "top_k" in first and later.get("top_k") != first.get("top_k"):
        # same model traced with another --top-k: records of the two segments hold different slot counts
        raise ModelMismatchError(f"segment {segment} was traced with top_k {later.get('top_k')}, segment 1 with "
                                 f"{first.get('top_k')} (moe-trace --top-k): refusing to mix them in one stream")


def _fingerprint_scheme(value) -> int | None:
    """1 for moetools 0.1.0's ``sha256:`` fingerprints, 2 for ``v2:sha256:`` (formats/README.md)."""
    if isinstance(value, str):
        if value.startswith("sha256:"):
            return 1
        if value.startswith("v2:sha256:"):
            return 2
    return None


class StreamReader:
    """Iterate the data records of a (possibly concatenated) stream.

    ``kinds`` (a kind or a tuple of kinds) refuses other kinds with
    :class:`KindError`. ``name`` (e.g. the path) prefixes error messages.
    """

    def __init__(self, source: BinaryIO, *, kinds: str | tuple[str, ...] | None = None,
                 name: str | None = None, validate: bool = False):
        self.validate = validate
        self.kinds = (kinds,) if isinstance(kinds, str) else (tuple(kinds) if kinds else None)
        self.name = name
        self.headers: list[dict] = []
        self.ends: list[dict] = []
        self._in_segment = False
        self._segment_count = 0
        self._input = _Counter()
        self._decoded = self._input
        with self._naming_errors():
            read = _reader(source)
            first = _first_bytes(read)
            self.encoding = detect_encoding(first)
            chunks = _read_chunks(read, first, self._input)
            if self.encoding == "zstd":
                self._decoded = _Counter()
                self._records = _msgpack_records(_zstd_frames(chunks, self._decoded))
            elif self.encoding == "msgpack":
                self._records = _msgpack_records(chunks)
            else:
                self._records = _jsonl_records(chunks)
            try:
                header = next(self._records)
            except StopIteration:
                raise TruncatedStreamError("empty input: no header record") from None
            self._start_segment(header)

    @contextlib.contextmanager
    def _naming_errors(self):
        try:
            yield
        except FormatError as error:
            if self.name and error.args and not str(error.args[0]).startswith(f"{self.name}: "):
                error.args = (f"{self.name}: {error.args[0]}",) + error.args[1:]
            raise

    @property
    def header(self) -> dict:
        """The first segment's header."""
        return self.headers[0]

    @property
    def count(self) -> int:
        """Data records declared by the end records read so far."""
        return sum(end["count"] for end in self.ends)

    @property
    def input_bytes(self) -> int:
        """Bytes read from the input so far (compressed, for zstd)."""
        return self._input.bytes

    @property
    def decoded_bytes(self) -> int:
        """msgpack or JSON-lines bytes decoded so far (equals ``input_bytes`` unless zstd)."""
        return self._decoded.bytes

    def _start_segment(self, header) -> None:
        segment = len(self.headers) + 1
        if segment > 1 and not (isinstance(header, dict) and header.get("type") == "header"):
            raise FormatError(f"a record after the end record of segment {segment - 1} is not a header")
        check_header(header, kinds=self.kinds)
        if self.validate:
            schema = schema_for(header["kind"])
            if schema is not None:
                schema.check_header(header)
        if self.headers:
            check_compatible(self.headers[0], header, segment)
        self.headers.append(header)
        self._in_segment = True
        self._segment_count = 0

    def _end_segment(self, end: dict) -> None:
        declared = end.get("count")
        segment = len(self.headers)
        if not isinstance(declared, int) or isinstance(declared, bool):
            raise FormatError(f"end record of segment {segment} has no integer count")
        if declared != self._segment_count:
            raise FormatError(f"end record of segment {segment} declares {declared} records, "
                              f"the segment holds {self._segment_count}")
        if self.validate:
            schema = schema_for(self.headers[-1]["kind"])
            if schema is not None:
                schema.check_end(end, self.headers[-1])
        self.ends.append(end)
        self._in_segment = False

    def records(self, *, control: bool = False) -> Iterator[dict]:
        """All data records; with ``control=True`` the header and end records too, in stream order."""
        with self._naming_errors():
            if control:
                yield self.headers[0]
            for record in self._records:
                if not self._in_segment:
                    self._start_segment(record)
                    if control:
                        yield record
                    continue
                if not isinstance(record, dict):
                    raise FormatError(f"record {self._segment_count + 1} of segment {len(self.headers)} "
                                      f"is not a map ({type(record).__name__})")
                kind = record.get("type")
                if kind == "end":
                    self._end_segment(record)
                    if control:
                        yield record
                    continue
                if kind == "header":
                    raise TruncatedStreamError(
                        f"segment {len(self.headers)} ends without its end record after "
                        f"{self._segment_count} records, where segment {len(self.headers) + 1} starts "
                        "(truncated?)")
                if not isinstance(kind, str):
                    raise FormatError(f"record {self._segment_count + 1} of segment {len(self.headers)} "
                                      "has no string 'type'")
                self._segment_count += 1
                if self.validate:
                    schema = schema_for(self.headers[-1]["kind"])
                    if schema is not None:
                        schema.check_record(record, self.headers[-1], self._segment_count)
                yield record
            if self._in_segment:
                raise TruncatedStreamError(
                    f"stream ends without an end record after {self._segment_count} records "
                    f"of segment {len(self.headers)} (truncated?)")

    def __iter__(self) -> Iterator[dict]:
        return self.records()


def read_stream(source: BinaryIO, kinds: str | tuple[str, ...] | None = None, *,
                name: str | None = None, validate: bool = False) -> StreamReader:
    """Open ``source`` (a binary file) as a :class:`StreamReader`; reads and checks the first header."""
    return StreamReader(source, kinds=kinds, name=name, validate=validate)
