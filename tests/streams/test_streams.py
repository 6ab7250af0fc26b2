"""moetools.streams: round trips, truncation, corruption, concatenation, arrays (formats/README.md)."""

from __future__ import annotations

import io
import math
import os
import threading

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from moetools.cli.cat import command as moe_cat
from moetools.errors import (
    FormatError,
    KindError,
    ModelMismatchError,
    MoetoolsError,
    TruncatedStreamError,
    VersionError,
)
from moetools.streams import (
    SUPPORTED_DTYPES,
    ZSTD_MAGIC,
    StreamReader,
    StreamWriter,
    decode_array,
    detect_encoding,
    encode_array,
    read_stream,
)
from moetools.streams.reader import check_header
from tests.conftest import MODEL, stream_bytes

ENCODINGS = [("msgpack", True), ("msgpack", False), ("jsonl", False)]
ENCODING_IDS = ["zstd", "msgpack", "jsonl"]

# -- hypothesis strategies: records with nested maps, strings and arrays of every dtype/shape ------------

arrays = st.sampled_from(SUPPORTED_DTYPES).flatmap(lambda dtype: hnp.arrays(
    np.dtype(dtype), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
scalars = st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) \
    | st.floats(allow_nan=False) | st.text(max_size=20)
keys = st.text(max_size=8).filter(lambda key: key not in ("nd", "shape", "data", "values"))
values = st.recursive(scalars | arrays, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(keys, inner, max_size=4), max_leaves=12)
records = st.builds(lambda fields, kind: {**fields, "type": kind},
                    st.dictionaries(keys, values, max_size=5),
                    st.text(min_size=1, max_size=10).filter(lambda kind: kind not in ("header", "end")))


def assert_same(read, written, path="record"):
    """Deep equality where arrays compare by dtype, shape and values (NaN equal to NaN)."""
    if isinstance(written, np.ndarray):
        assert isinstance(read, np.ndarray), path
        assert read.dtype == written.dtype.newbyteorder("<") or read.dtype == written.dtype, path
        assert read.shape == written.shape, path
        equal_nan = written.dtype.kind == "f"
        assert np.array_equal(read, written, equal_nan=equal_nan), path
    elif isinstance(written, dict):
        assert isinstance(read, dict) and read.keys() == written.keys(), path
        for key in written:
            assert_same(read[key], written[key], f"{path}.{key}")
    elif isinstance(written, list):
        assert isinstance(read, list) and len(read) == len(written), path
        for index, (a, b) in enumerate(zip(read, written)):
            assert_same(a, b, f"{path}[{index}]")
    elif isinstance(written, float) and math.isnan(written):
        assert math.isnan(read), path
    else:
        assert read == written and type(read) is type(written), path


@pytest.mark.parametrize("encoding,compress", ENCODINGS, ids=ENCODING_IDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(records, max_size=4))
def test_round_trip(encoding, compress, data):
    from moetools.streams.strict_json import NonFiniteJSONError, first_non_finite

    if encoding == "jsonl" and any(first_non_finite(record) for record in data):
        with pytest.raises(NonFiniteJSONError):  # JSON lines are strict JSON: no NaN or Infinity tokens
            stream_bytes(data, encoding=encoding, compress=compress)
        return
    raw = stream_bytes(data, encoding=encoding, compress=compress, end_extra={"note": "done"})
    reader = read_stream(io.BytesIO(raw))
    back = list(reader)
    assert len(back) == len(data)
    for read, written in zip(back, data):
        assert_same(read, written)
    assert reader.header["model"] == MODEL and reader.ends == [{"type": "end", "count": len(data), "note": "done"}]


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0), (2, 3), (1, 1, 5)])
def test_arrays_are_little_endian_zero_copy_views(dtype, shape):
    array = (np.arange(math.prod(shape)) % 3).astype(dtype).reshape(shape)
    encoded = encode_array(array)
    assert encoded["shape"] == list(shape) and encoded["nd"] == dtype
    assert len(encoded["data"]) == array.nbytes
    raw = stream_bytes([{"type": "a", "x": array}])
    (record,) = list(read_stream(io.BytesIO(raw)))
    assert record["x"].shape == shape and record["x"].dtype == np.dtype(dtype)
    assert not record["x"].flags.writeable  # a numpy.frombuffer view of the unpacked bytes
    assert np.array_equal(decode_array(encoded), array)


def test_big_endian_and_non_contiguous_arrays_are_written_little_endian_c_order():
    big = np.arange(6, dtype=">f4").reshape(2, 3)
    encoded = encode_array(big.T)  # a transposed (Fortran-order) view
    assert encoded["nd"] == "<f4" and encoded["shape"] == [3, 2]
    assert np.array_equal(decode_array(encoded), big.T)


def test_unsupported_dtypes_and_json_bytes_are_refused():
    with pytest.raises(FormatError, match="unsupported array dtype"):
        stream_bytes([{"type": "a", "x": np.zeros(2, dtype=np.complex64)}])
    with pytest.raises(FormatError, match="bin value outside an array"):
        stream_bytes([{"type": "a", "x": b"raw"}], encoding="jsonl", compress=False)
    with pytest.raises(ValueError, match="type"):
        stream_bytes([{"type": "end"}])


@pytest.mark.parametrize("prefix,expected", [
    (ZSTD_MAGIC + b"rest", "zstd"), (b"\x81\xa4type", "msgpack"), (b"\xde\x00\x10", "msgpack"),
    (b'{"type"', "jsonl")])
def test_detect_encoding(prefix, expected):
    assert detect_encoding(prefix) == expected


@pytest.mark.parametrize("prefix,error", [(b"", TruncatedStreamError), (b"\x28\xb5", TruncatedStreamError),
                                          (b"\x91\x01", FormatError), (b" {", FormatError),
                                          (b"\xef\xbb\xbf{", FormatError)])
def test_detect_encoding_refuses(prefix, error):
    with pytest.raises(error):
        detect_encoding(prefix)


def test_header_checks():
    good = {"type": "header", "format": "moetools", "version": 1, "kind": "trace"}
    assert check_header(good, kinds=("trace",)) is good
    with pytest.raises(VersionError):
        check_header({**good, "version": 2})
    with pytest.raises(FormatError, match="integer version"):
        check_header({**good, "version": True})
    with pytest.raises(KindError, match="expected a samples stream"):
        check_header(good, kinds=("samples",))


# -- truncation and corruption ---------------------------------------------------------------------

SMALL = [{"type": "sequence", "doc_id": "d0", "experts": np.arange(8, dtype="<u2").reshape(2, 4)},
         {"type": "sequence", "doc_id": "d1", "gates": np.linspace(0, 1, 4, dtype="<f2")}]
#: a kind without a schema: moe-cat --check tests of framing alone (SMALL's records are no valid trace records)
FRAMING_ONLY = "example"


@pytest.mark.parametrize("encoding,compress", ENCODINGS, ids=ENCODING_IDS)
def test_truncation_at_every_byte_offset_is_exit_3_with_one_line(run_tool, encoding, compress):
    raw = stream_bytes(SMALL, kind=FRAMING_ONLY, encoding=encoding, compress=compress)
    assert run_tool(moe_cat, ["--check"], input=raw).exit_code == 0
    for offset in range(len(raw)):
        result = run_tool(moe_cat, ["--check"], input=raw[:offset])
        assert result.exit_code == 3, (offset, result.stderr)
        assert result.stderr.startswith("moe-cat: ") and result.stderr.count("\n") == 1, (offset, result.stderr)
        assert "Traceback" not in result.stderr and result.stdout_bytes == b""


def test_truncated_records_are_delivered_before_the_error():
    raw = stream_bytes(SMALL, end=False)
    reader = read_stream(io.BytesIO(raw))
    seen = []
    with pytest.raises(TruncatedStreamError, match="without an end record after 2 records"):
        for record in reader:
            seen.append(record["doc_id"])
    assert seen == ["d0", "d1"]


def test_corrupt_zstd_bytes_never_give_altered_records():
    raw = stream_bytes(SMALL)
    errors = 0
    for offset in range(len(raw)):
        for flip in (0xFF, 0x01, 0x80):
            damaged = bytearray(raw)
            damaged[offset] ^= flip
            try:
                back = list(read_stream(io.BytesIO(bytes(damaged))))
            except MoetoolsError as error:
                assert error.exit_code in (2, 3) and "\n" not in str(error)
                errors += 1
            else:  # damage the checksum proves harmless (e.g. the window size): the same records
                for read, written in zip(back, SMALL, strict=True):
                    assert_same(read, written)
    assert errors > 2.9 * len(raw)  # nearly every damaged byte is detected


def test_corrupt_zstd_frame_on_the_command_line(run_tool):
    raw = bytearray(stream_bytes(SMALL, kind=FRAMING_ONLY))
    raw[len(raw) // 2] ^= 0x55
    result = run_tool(moe_cat, ["--check"], input=bytes(raw))
    assert result.exit_code == 2 and result.stderr.startswith("moe-cat: corrupt zstd frame")
    assert result.stderr.count("\n") == 1


def test_records_split_across_foreign_zstd_frames_are_read():
    plain = stream_bytes(SMALL, compress=False)
    compressor = zstandard.ZstdCompressor(level=3)
    chopped = b"".join(compressor.compress(plain[i:i + 7]) for i in range(0, len(plain), 7))
    assert [r["doc_id"] for r in read_stream(io.BytesIO(chopped))] == ["d0", "d1"]


def test_writer_ends_frames_at_record_boundaries_and_flush_makes_records_visible():
    buffer = io.BytesIO()
    writer = StreamWriter(buffer, "trace", model=MODEL, frame_bytes=64)
    for index in range(5):
        writer.write({"type": "sequence", "doc_id": f"d{index}", "x": np.zeros(16, dtype="<f4")})
    writer.flush()  # no end record yet: what a reader downstream sees while the writer runs
    seen = []
    with pytest.raises(TruncatedStreamError):
        for record in read_stream(io.BytesIO(buffer.getvalue())):
            seen.append(record["doc_id"])
    assert seen == [f"d{index}" for index in range(5)]
    assert buffer.getvalue().count(ZSTD_MAGIC) >= 5  # one frame per record at this frame size
    writer.close()
    assert read_stream(io.BytesIO(buffer.getvalue())).header["kind"] == "trace"


# -- concatenation -----------------------------------------------------------------------------

@pytest.mark.parametrize("encoding,compress", ENCODINGS, ids=ENCODING_IDS)
def test_concatenated_segments_read_as_one_stream(encoding, compress):
    first = stream_bytes(SMALL, encoding=encoding, compress=compress, end_extra={"shard": 1})
    second = stream_bytes(SMALL[:1], encoding=encoding, compress=compress, end_extra={"shard": 2})
    reader = StreamReader(io.BytesIO(first + second))
    assert [r["doc_id"] for r in reader] == ["d0", "d1", "d0"]
    assert len(reader.headers) == 2 and [end["shard"] for end in reader.ends] == [1, 2] and reader.count == 3


def test_mixed_models_and_kinds_are_refused():
    other = dict(MODEL, name="other", fingerprint="sha256:" + "b2" * 32)
    mixed = stream_bytes(SMALL) + stream_bytes(SMALL, model=other)
    with pytest.raises(ModelMismatchError, match="segment 2 comes from another model.*'other'"):
        list(StreamReader(io.BytesIO(mixed), name="mixed.zst"))
    with pytest.raises(KindError, match="segment 2 is a samples stream"):
        list(StreamReader(io.BytesIO(stream_bytes(SMALL) + stream_bytes([], kind="samples"))))


def test_errors_name_the_input():
    with pytest.raises(TruncatedStreamError, match="^shard-3.zst: "):
        list(StreamReader(io.BytesIO(stream_bytes(SMALL, end=False)), name="shard-3.zst"))


@pytest.mark.parametrize("encoding,compress", ENCODINGS, ids=ENCODING_IDS)
def test_records_reach_a_reader_downstream_of_a_pipe_while_the_writer_runs(encoding, compress):
    """`moe-trace | moe-sample`: a record flushed by the writer is read before the writer goes on."""
    read_end, write_end = os.pipe()
    first_seen = threading.Event()

    def produce():
        with os.fdopen(write_end, "wb") as out:
            writer = StreamWriter(out, "trace", model=MODEL, encoding=encoding, compress=compress)
            writer.write({"type": "sequence", "doc_id": "d0"})
            writer.flush()
            first_seen.wait(timeout=10)  # a reader waiting for a full chunk would stall here
            writer.write({"type": "sequence", "doc_id": "d1"})
            writer.close()

    producer = threading.Thread(target=produce)
    producer.start()
    order = []
    with os.fdopen(read_end, "rb") as source:
        for record in read_stream(source):
            order.append((record["doc_id"], first_seen.is_set()))
            first_seen.set()
    producer.join()
    assert order == [("d0", False), ("d1", True)]


# -- memory: independent of the stream's length (DESIGN.md "Streams") -------------------------------

def _peak_traced_bytes(function) -> int:
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("encoding,compress", ENCODINGS, ids=ENCODING_IDS)
def test_memory_of_writing_and_reading_does_not_grow_with_stream_length(tmp_path, encoding, compress):
    """Ten times the records, the same peak memory (Python and numpy allocations, tracemalloc).

    The bound is one input chunk plus one zstd frame plus one record (formats/README.md): the frames are
    made small here so that the short stream already holds several of them."""
    rng = np.random.default_rng(0)  # random values: the stream does not compress to nothing
    records = [{"type": "sequence", "doc_id": f"d{index}",
                "experts": rng.integers(0, 64, (16, 32), dtype="<u2"),
                "gates": rng.random((16, 32), dtype="<f4").astype("<f2")} for index in range(64)]
    small_count = 300 if encoding == "jsonl" else 1500  # a few MiB: past the plateau of the input buffers
    peaks = {}
    for count in (small_count, 10 * small_count):
        path = tmp_path / f"{count}.stream"

        def write(path=path, count=count):
            with open(path, "wb") as out:
                writer = StreamWriter(out, "trace", model=MODEL, encoding=encoding, compress=compress,
                                      frame_bytes=256 << 10)  # several frames already in the short stream
                for index in range(count):
                    writer.write(records[index % 64])
                writer.close()

        def read(path=path, count=count):
            with open(path, "rb") as source:
                assert sum(1 for _ in read_stream(source)) == count

        peaks[count] = (_peak_traced_bytes(write), _peak_traced_bytes(read))
    for side, (small, large) in zip(("write", "read"), zip(peaks[small_count], peaks[10 * small_count])):
        assert large < 1.3 * small + (256 << 10), (side, small, large)
        assert large < 6 << 20, (side, large)  # about one input chunk, one frame and one record


def test_create_directory_swaps_a_complete_directory_in_or_leaves_the_old_one(tmp_path):
    from moetools.streams.files import create_directory
    from moetools.streams.outputs import MARKER

    target = tmp_path / "checkpoint"
    with create_directory(target) as partial:
        assert partial == tmp_path / "checkpoint.partial"
        (partial / "a").write_text("1")
    with pytest.raises(RuntimeError), create_directory(target) as partial:
        (partial / "b").write_text("2")
        raise RuntimeError("killed while writing")
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "a"] and sorted(
        p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    with create_directory(target) as partial:
        (partial / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "c"] and sorted(
        p.name for p in tmp_path.iterdir()) == ["checkpoint"]
