"""Generate the conformance files under formats/examples/ (and their manifest and README).

    .venv/bin/python formats/examples/make_examples.py            # rewrite formats/examples/
    .venv/bin/python formats/examples/make_examples.py OUTDIR     # somewhere else (the tests do this)

Everything is deterministic (no randomness, no dates, a fixed producing tool),
so a rerun gives the same bytes with the same zstandard version. ``manifest.json``
says for each file what a reader must do; tests/project/test_conformance.py checks
that moetools does exactly that, and README.md is rendered from the manifest.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import msgpack
import numpy as np
import zstandard

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from moetools.streams import SUPPORTED_DTYPES, StreamWriter

TOOL = {"name": "make_examples", "version": "1", "args": {"seed": 0}}
MODEL = {"name": "tiny-moe", "path": None, "model_type": "olmoe", "num_layers": 2, "moe_layers": [0, 1],
         "num_experts": 4, "top_k": 2, "fingerprint": "sha256:" + "a1" * 32}
OTHER_MODEL = dict(MODEL, name="other-moe", fingerprint="sha256:" + "b2" * 32)
TRACE_HEADER = {"layers": [0, 1], "num_experts": 4, "top_k": 2}
L, T, K, E = 2, 4, 2, 4  # MoE layers, tokens, experts per token, experts per layer


def sequence(index: int) -> dict:
    """A small trace record (formats/trace.md) with fixed values."""
    experts = ((np.arange(L * T * K) * 3 + index) % E).astype("<u2").reshape(L, T, K)  # (L, T, K)
    gates = np.tile(np.array([0.75, 0.25], dtype="<f2"), (L, T, 1))  # (L, T, K)
    return {"type": "sequence", "doc_id": f"doc{index}", "window": 0, "offset": 0, "meta": {"domain": "code"},
            "tokens": (np.arange(T, dtype="<i4") + 100 * index), "pieces": ["def", " f", "(", "):"],
            "experts": experts, "gates": gates, "contribution": (gates * np.float16(2.0)).astype("<f2"),
            "prob_sum": np.full((L, E), T / E, dtype="<f4")}


def array_records() -> list[dict]:
    """One record per dtype with 0-d, empty and 2-d arrays, plus the scalar types of records."""
    records = []
    for dtype in SUPPORTED_DTYPES:
        full = (np.arange(6) % 2 == 1) if dtype == "|b1" else np.arange(6) - (0 if dtype[1] == "u" else 2)
        records.append({"type": "arrays", "nd": dtype,
                        "scalar": np.asarray(full[1], dtype=dtype),  # shape []
                        "empty": np.zeros((0,), dtype=dtype), "empty_2d": np.zeros((2, 0), dtype=dtype),
                        "matrix": full.astype(dtype).reshape(2, 3)})
    records.append({"type": "values", "null": None, "true": True, "false": False, "int_max": 2 ** 63 - 1,
                    "int_min": -(2 ** 63), "uint_max": 2 ** 64 - 1, "float": 0.1, "text": "naïve — 专家 ✓",
                    "nested": {"list": [1, "two", [3.5, None]], "map": {"deeper": {"arrays": [
                        np.array([1.5, -2.0], dtype="<f4"), np.array([[7]], dtype="<u2")]}}}})
    return records


def stream(records, *, kind="trace", model=MODEL, encoding="msgpack", compress=False, frame_bytes=4 << 20,
           header_extra=None, end_extra=None, end=True, tool=TOOL) -> bytes:
    buffer = io.BytesIO()
    extra = dict(TRACE_HEADER) if (kind == "trace" and header_extra is None) else (header_extra or {})
    writer = StreamWriter(buffer, kind, tool=tool, model=model, encoding=encoding, compress=compress,
                          level=1, frame_bytes=frame_bytes, header_extra=extra)
    for record in records:
        writer.write(record)
    if end:
        writer.close(**(end_extra or {}))
    else:
        writer.abandon()
    return buffer.getvalue()


def jsonl(*objects) -> bytes:
    return b"".join(json.dumps(item, separators=(",", ":")).encode() + b"\n" for item in objects)


def header(**changes) -> dict:
    record = {"type": "header", "format": "moetools", "version": 1, "kind": "labels", "tool": TOOL, "model": MODEL}
    record.update(changes)
    return record


LABEL = {"type": "label", "layer": 0, "expert": 1, "explanation": "Python keywords", "status": "ok"}


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=1, write_checksum=True).compress(data)


def build() -> dict[str, tuple[bytes, dict]]:
    """file name -> (bytes, manifest entry)."""
    trace = [sequence(i) for i in range(3)]
    plain = stream(trace)
    packed = stream(trace, compress=True)
    multiframe = stream([sequence(i) for i in range(8)], compress=True, frame_bytes=1)
    frames_before_end = multiframe[:multiframe.rfind(b"\x28\xb5\x2f\xfd")]
    shard = [stream(trace[:2], compress=True, tool=dict(TOOL, args={"shard": "1/2"}), end_extra={"tokens": 8}),
             stream(trace[2:], compress=True, tool=dict(TOOL, args={"shard": "2/2"}), end_extra={"tokens": 4})]
    values = array_records()
    trace_jsonl = stream(trace, encoding="jsonl")
    last_record_start = plain.rfind(b"\x82\xa4type\xa3end")
    packer = msgpack.Packer(use_bin_type=True)
    plain_header = plain[:plain.find(b"\x8b\xa4type\xa8sequence")]
    bad_array = {"type": "sequence", "x": {"nd": "<u2", "shape": [3], "data": b"\x01\x00\x02\x00"}}

    def ok(description, records, segments=1, kind="trace"):
        return {"valid": True, "description": description, "kind": kind, "segments": segments, "records": records}

    def bad(description, error, message):
        return {"valid": False, "description": description, "error": error,
                "exit": 3 if error == "TruncatedStreamError" else 2, "message": message}

    files = {
        "valid/minimal.jsonl": (jsonl(header(), {"type": "end", "count": 0}),
                                ok("a header and an end record, no data records", 0, kind="labels")),
        "valid/trace.msgpack": (plain, ok("3 trace records, plain msgpack", 3)),
        "valid/trace.msgpack.zst": (packed, ok("the same 3 records in one zstd frame", 3)),
        "valid/trace.jsonl": (trace_jsonl, ok("the same 3 records as JSON lines, arrays as nested lists", 3)),
        "valid/multiframe.msgpack.zst": (multiframe, ok("8 records, one zstd frame per record", 8)),
        "valid/split-frames.msgpack.zst": (
            b"".join(zstd(plain[i:i + 50]) for i in range(0, len(plain), 50)),
            ok("valid/trace.msgpack compressed 50 bytes per frame: records split across frames", 3)),
        "valid/concatenated.msgpack.zst": (
            b"".join(shard),
            ok("two shards of one model (2 + 1 records), with extra fields in their end records", 3, 2)),
        "valid/arrays.msgpack": (stream(values, kind="example"), ok(
            "every dtype as 0-d, empty and 2-d arrays; nil, bools, 64-bit ints, floats, UTF-8 text, nested "
            "maps and lists holding arrays", len(values), kind="example")),
        "valid/arrays.jsonl": (stream(values, kind="example", encoding="jsonl"),
                               ok("valid/arrays.msgpack as JSON lines", len(values), kind="example")),
        "valid/crlf-blank-lines.jsonl": (
            jsonl(header(), LABEL).replace(b"\n", b"\r\n") + b"\n  \n" + jsonl({"type": "end", "count": 1}),
            ok("CR LF line ends and a line of whitespace, both tolerated", 1, kind="labels")),
        "valid/unknown-fields.jsonl": (
            jsonl(header(future_field={"x": 1}), dict(LABEL, new_field=[1, 2]), {"type": "future_record", "x": 2},
                  {"type": "end", "count": 2, "future_total": 3}),
            ok("fields and a record type this reader does not know: ignored, still counted", 2, kind="labels")),
        "valid/no-model.jsonl": (jsonl(header(model=None), LABEL, {"type": "end", "count": 1}),
                                 ok("a stream about no model (model null)", 1, kind="labels")),

        "invalid/empty": (b"", bad("no bytes at all", "TruncatedStreamError", "empty input")),
        "invalid/zstd-magic-only.zst": (packed[:2], bad("the first 2 bytes of the zstd magic number",
                                                        "TruncatedStreamError", "zstd magic")),
        "invalid/truncated-frame.msgpack.zst": (packed[:len(packed) // 2], bad(
            "valid/trace.msgpack.zst cut in the middle of its frame", "TruncatedStreamError",
            "inside a zstd frame")),
        "invalid/truncated-between-frames.msgpack.zst": (frames_before_end, bad(
            "valid/multiframe.msgpack.zst without its last frame (the one holding the end record)",
            "TruncatedStreamError", "without an end record")),
        "invalid/truncated-record.msgpack": (plain[:last_record_start - 10], bad(
            "valid/trace.msgpack cut inside its last data record", "TruncatedStreamError",
            "inside a msgpack record")),
        "invalid/truncated-no-end.msgpack": (plain[:last_record_start], bad(
            "valid/trace.msgpack without its end record", "TruncatedStreamError", "without an end record")),
        "invalid/truncated-line.jsonl": (trace_jsonl[:-1], bad(
            "valid/trace.jsonl without its last line feed", "TruncatedStreamError", "inside a JSON line")),
        "invalid/truncated-no-end.jsonl": (jsonl(header(), LABEL), bad(
            "a header and a data record, no end record", "TruncatedStreamError", "without an end record")),
        "invalid/truncated-segment.jsonl": (
            jsonl(header(), LABEL, header(), LABEL, {"type": "end", "count": 1}),
            bad("a segment without its end record followed by a complete one (a cut shard, then cat)",
                "TruncatedStreamError", "ends without its end record")),
        "invalid/corrupt-checksum.msgpack.zst": (packed[:-1] + bytes([packed[-1] ^ 0xFF]), bad(
            "valid/trace.msgpack.zst with a damaged frame checksum", "FormatError", "corrupt zstd frame")),
        "invalid/corrupt-block.msgpack.zst": (
            packed[:len(packed) // 2] + bytes([packed[len(packed) // 2] ^ 0x55]) + packed[len(packed) // 2 + 1:],
            bad("valid/trace.msgpack.zst with one byte damaged in the middle of the frame", "FormatError",
                "corrupt zstd frame")),
        "invalid/garbage-after-frame.msgpack.zst": (packed + b"garbage\n", bad(
            "bytes after the last frame that are not a zstd frame", "FormatError", "not another zstd frame")),
        "invalid/skippable-frame.msgpack.zst": (packed + b"\x50\x2a\x4d\x18\x04\x00\x00\x00skip", bad(
            "a zstd skippable frame after the stream (not allowed)", "FormatError", "not another zstd frame")),
        "invalid/mixed-encodings.msgpack.zst": (packed + plain, bad(
            "a zstd stream followed by a plain msgpack one", "FormatError", "not another zstd frame")),
        "invalid/not-a-stream.txt": (b"hello world\n", bad("plain text", "FormatError", "not a moetools stream")),
        "invalid/not-a-map.msgpack": (packer.pack([1, 2]) + plain, bad(
            "a msgpack array where the header map should start", "FormatError", "not a moetools stream")),
        "invalid/no-header.jsonl": (jsonl(LABEL, {"type": "end", "count": 1}), bad(
            "a data record where the header should be", "FormatError", "does not start with a header")),
        "invalid/bad-format.jsonl": (jsonl(header(format="other"), {"type": "end", "count": 0}), bad(
            "header format is not \"moetools\"", "FormatError", "header format")),
        "invalid/version-not-int.jsonl": (jsonl(header(version="1"), {"type": "end", "count": 0}), bad(
            "header version is a string", "FormatError", "integer version")),
        "invalid/wrong-version.jsonl": (jsonl(header(version=99), {"type": "end", "count": 0}), bad(
            "header version 99, newer than this reader", "VersionError", "not supported")),
        "invalid/wrong-version.msgpack.zst": (zstd(packer.pack(header(version=0)) + packer.pack(
            {"type": "end", "count": 0})), bad("header version 0", "VersionError", "not supported")),
        "invalid/no-kind.msgpack": (packer.pack(header(kind="")) + packer.pack({"type": "end", "count": 0}), bad(
            "header kind is empty", "FormatError", "no kind")),
        "invalid/mixed-models.msgpack.zst": (shard[0] + stream(trace[2:], model=OTHER_MODEL, compress=True), bad(
            "two segments whose model fingerprints differ", "ModelMismatchError", "another model")),
        "invalid/mixed-models-null.jsonl": (
            jsonl(header(), {"type": "end", "count": 0}, header(model=None), {"type": "end", "count": 0}),
            bad("a segment with a model, then one with model null", "ModelMismatchError", "another model")),
        "invalid/mixed-kinds.jsonl": (
            jsonl(header(), {"type": "end", "count": 0}, header(kind="scores"), {"type": "end", "count": 0}),
            bad("a labels segment followed by a scores segment", "KindError", "segment 2 is a scores stream")),
        "invalid/wrong-count.jsonl": (jsonl(header(), LABEL, {"type": "end", "count": 5}), bad(
            "the end record declares 5 records, the segment holds 1", "FormatError", "declares 5 records")),
        "invalid/count-not-int.jsonl": (jsonl(header(), LABEL, {"type": "end", "count": "1"}), bad(
            "the end record's count is a string", "FormatError", "no integer count")),
        "invalid/record-without-type.jsonl": (jsonl(header(), {"layer": 0}, {"type": "end", "count": 1}), bad(
            "a data record without a type", "FormatError", "no string 'type'")),
        "invalid/record-not-map.msgpack": (plain_header + packer.pack(7) + packer.pack({"type": "end", "count": 1}),
                                           bad("a data record that is an integer", "FormatError", "not a map")),
        "invalid/record-after-end.jsonl": (jsonl(header(), {"type": "end", "count": 0}, LABEL), bad(
            "a data record after the end record", "FormatError", "is not a header")),
        "invalid/bad-json.jsonl": (jsonl(header()) + b'{"type": "label", "layer": \n' + jsonl(
            {"type": "end", "count": 1}), bad("a line that is not JSON", "FormatError", "not valid JSON")),
        "invalid/bad-utf8.msgpack": (plain_header + b"\x82\xa4type\xa5label\xa4text\xa2\xff\xfe" + packer.pack(
            {"type": "end", "count": 1}), bad("a str that is not UTF-8", "FormatError", "corrupt msgpack record")),
        "invalid/ext-type.msgpack": (plain_header + packer.pack({"type": "label", "x": msgpack.ExtType(5, b"ab")})
                                     + packer.pack({"type": "end", "count": 1}),
                                     bad("a msgpack extension type", "FormatError", "extension type")),
        "invalid/array-wrong-size.msgpack": (plain_header + packer.pack(bad_array) + packer.pack(
            {"type": "end", "count": 1}), bad("a <u2 array of shape [3] with 4 bytes of data", "FormatError",
                                              "needs 6 bytes")),
        "invalid/array-big-endian.msgpack": (
            plain_header + packer.pack({"type": "sequence", "x": {"nd": ">f4", "shape": [1], "data": b"\0\0\0\0"}})
            + packer.pack({"type": "end", "count": 1}),
            bad("a big-endian >f4 array", "FormatError", "unsupported array dtype")),
        "invalid/array-bad-shape.jsonl": (
            jsonl(header(), dict(LABEL, x={"nd": "<u2", "shape": [-1], "values": []}), {"type": "end", "count": 1}),
            bad("an array with a negative dimension", "FormatError", "bad array shape")),
        "invalid/array-values-mismatch.jsonl": (
            jsonl(header(), dict(LABEL, x={"nd": "<u2", "shape": [3], "values": [1, 2]}),
                  {"type": "end", "count": 1}),
            bad("a JSON array of shape [3] with 2 values", "FormatError", "bad JSON array values")),
    }
    return files


README_HEAD = """\
# Conformance files for the moetools stream format

Generated by `make_examples.py` (rerun it after changing the format; `manifest.json` holds the same
table in machine-readable form). The specification is [../README.md](../README.md).

A conforming reader MUST accept every file under `valid/`, reading exactly the given number of
data records in the given number of segments, and MUST reject every file under `invalid/` with the
given error. The error classes are those of `moetools.errors`; the exit status is what every
moetools tool (e.g. `moe-cat --check FILE`) returns, with a one-line message on stderr containing
the given text. `tests/project/test_conformance.py` checks all of it.
"""


def render_readme(manifest: dict) -> str:
    lines = [README_HEAD, "## valid/", "", "| file | kind | segments | data records | what it holds |",
             "|---|---|---|---|---|"]
    for name, entry in manifest.items():
        if entry["valid"]:
            lines.append(f"| `{name.split('/', 1)[1]}` | {entry['kind']} | {entry['segments']} | {entry['records']} "
                         f"| {entry['description']} |")
    lines += ["", "## invalid/", "", "| file | what is wrong | error | exit | message contains |",
              "|---|---|---|---|---|"]
    for name, entry in manifest.items():
        if not entry["valid"]:
            message = entry["message"].replace("|", "\\|")
            lines.append(f"| `{name.split('/', 1)[1]}` | {entry['description']} | `{entry['error']}` "
                         f"| {entry['exit']} | {message} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else HERE
    files = build()
    for sub in ("valid", "invalid"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    manifest = {}
    for name, (data, entry) in sorted(files.items(), key=lambda item: (item[0].startswith("invalid"), item[0])):
        (out / name).write_bytes(data)
        manifest[name] = entry
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "README.md").write_text(render_readme(manifest), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
