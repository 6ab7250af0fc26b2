"""moe-cat: conversion, --head, --kind, --summary, --check, several inputs, pipelines."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from moetools.cat import copy_streams
from moetools.cli.cat import command as moe_cat
from moetools.streams import ZSTD_MAGIC, read_stream
from tests.conftest import MODEL, stream_bytes

ROOT = Path(__file__).resolve().parents[2]


def sequences(count: int, start: int = 0) -> list[dict]:
    return [{"type": "sequence", "doc_id": f"d{start + index}", "experts": np.full((2, 3, 2), index, dtype="<u2"),
             "gates": np.full((2, 3, 2), 0.5, dtype="<f2")} for index in range(count)]


#: the header fields formats/trace.md requires (--check validates records against them)
TRACE_HEADER = {"layers": [0, 1], "num_experts": 4, "top_k": 2}


def valid_sequences(count: int, start: int = 0) -> list[dict]:
    """Sequence records that satisfy formats/trace.md under TRACE_HEADER (moe-cat --check checks contents)."""
    shape = (2, 3, 2)
    return [{"type": "sequence", "doc_id": f"d{start + index}", "window": 0, "offset": 0, "meta": {},
             "tokens": np.arange(3, dtype="<i4"), "pieces": ["a", "b", "c"],
             "experts": np.full(shape, index % 4, dtype="<u2"), "gates": np.full(shape, 0.5, dtype="<f2"),
             "contribution": np.full(shape, 1.0, dtype="<f2"), "prob_sum": np.ones((2, 4), dtype="<f4")}
            for index in range(count)]


def trace_bytes(count: int, start: int = 0, **kwargs) -> bytes:
    return stream_bytes(valid_sequences(count, start), header_extra=TRACE_HEADER, **kwargs)


def read_all(raw: bytes):
    reader = read_stream(io.BytesIO(raw))
    return reader, list(reader)


def test_zstd_to_jsonl_and_back_keeps_every_record_and_field(run_tool):
    raw = stream_bytes(sequences(3), end_extra={"tokens": 9})
    as_json = run_tool(moe_cat, ["--format", "jsonl"], input=raw)
    assert as_json.exit_code == 0, as_json.stderr
    lines = [json.loads(line) for line in as_json.stdout_bytes.splitlines()]
    assert [line["type"] for line in lines] == ["header", "sequence", "sequence", "sequence", "end"]
    assert lines[1]["experts"] == {"nd": "<u2", "shape": [2, 3, 2], "values": [[[0, 0]] * 3] * 2}
    assert lines[-1] == {"type": "end", "count": 3, "tokens": 9}
    back = run_tool(moe_cat, ["--format", "msgpack"], input=as_json.stdout_bytes)
    assert back.stdout_bytes.startswith(ZSTD_MAGIC)
    reader, records = read_all(back.stdout_bytes)
    assert reader.header == read_all(raw)[0].header and reader.ends == [{"type": "end", "count": 3, "tokens": 9}]
    assert all(np.array_equal(r["gates"], s["gates"]) for r, s in zip(records, sequences(3)))


@pytest.mark.parametrize("encoding,compress,first", [("msgpack", True, ZSTD_MAGIC[:1]), ("msgpack", False, b"\x86"),
                                                     ("jsonl", False, b"{")])
def test_default_output_keeps_the_input_encoding(run_tool, encoding, compress, first):
    raw = stream_bytes(sequences(2), encoding=encoding, compress=compress)
    result = run_tool(moe_cat, [], input=raw)
    assert result.exit_code == 0 and result.stdout_bytes[:1] == first
    assert result.stdout_bytes == raw  # the same writer, the same bytes


@pytest.mark.parametrize("head,expected", [(0, []), (2, ["d0", "d1"]), (4, ["d0", "d1", "d2", "d3"]),
                                           (99, ["d0", "d1", "d2", "d3", "d4"])])
def test_head_gives_a_complete_stream_and_spans_segments(run_tool, head, expected):
    raw = stream_bytes(sequences(3)) + stream_bytes(sequences(2, start=3))
    result = run_tool(moe_cat, ["--head", str(head)], input=raw)
    assert result.exit_code == 0, result.stderr
    reader, records = read_all(result.stdout_bytes)
    assert [r["doc_id"] for r in records] == expected
    assert reader.count == len(expected)


def test_head_does_not_read_past_what_it_needs(run_tool):
    raw = stream_bytes(sequences(3), compress=False, end=False)  # truncated after 3 records
    result = run_tool(moe_cat, ["--head", "2", "--format", "jsonl"], input=raw)
    assert result.exit_code == 0 and result.stdout_bytes.count(b"\n") == 4


def test_kind_is_asserted(run_tool):
    raw = trace_bytes(1)
    assert run_tool(moe_cat, ["--kind", "trace", "--check"], input=raw).exit_code == 0
    result = run_tool(moe_cat, ["--kind", "labels"], input=raw)
    assert result.exit_code == 2 and result.stderr == "moe-cat: expected a labels stream, got a trace stream\n"


def test_summary_counts_records_segments_models_and_bytes(run_tool):
    raw = stream_bytes(sequences(3)) + stream_bytes(sequences(1) + [{"type": "note", "text": "x"}])
    result = run_tool(moe_cat, ["--summary"], input=raw)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout_bytes)
    assert summary["segments"] == 2 and summary["records"] == 5 and summary["kind"] == "trace"
    assert summary["by_type"] == {"note": 1, "sequence": 4}
    assert summary["models"] == [{"name": "tiny-moe", "fingerprint": MODEL["fingerprint"], "segments": 2}]
    assert summary["input_bytes"] == len(raw) and summary["decoded_bytes"] > len(raw)
    assert summary["array_bytes"] == 4 * (12 * 2 + 12 * 2) and summary["complete"] is True


def test_summary_of_a_truncated_stream_shows_what_was_read_and_exits_3(run_tool):
    result = run_tool(moe_cat, ["--summary"], input=stream_bytes(sequences(2), end=False))
    assert result.exit_code == 3
    summary = json.loads(result.stdout_bytes)
    assert summary["records"] == 2 and summary["complete"] is False and "end record" in summary["error"]
    assert result.stderr.count("\n") == 1


def test_check_is_silent_unless_verbose(run_tool):
    raw = trace_bytes(2)
    quiet = run_tool(moe_cat, ["--check"], input=raw)
    assert (quiet.exit_code, quiet.stdout_bytes, quiet.stderr) == (0, b"", "")
    verbose = run_tool(moe_cat, ["--check", "-v"], input=raw)
    assert verbose.exit_code == 0 and verbose.stderr.startswith("moe-cat: ok: trace stream, 1 segment(s), 2 records")


def test_several_inputs_and_stdin_read_as_one_stream(run_tool, tmp_path):
    first, last = tmp_path / "a.zst", tmp_path / "c.jsonl"
    first.write_bytes(stream_bytes(sequences(1)))
    last.write_bytes(stream_bytes(sequences(1, start=2), encoding="jsonl", compress=False))
    middle = stream_bytes(sequences(1, start=1), compress=False)
    result = run_tool(moe_cat, [str(first), "-", str(last), "--format", "jsonl"], input=middle)
    assert result.exit_code == 0, result.stderr
    docs = [json.loads(line).get("doc_id") for line in result.stdout_bytes.splitlines()]
    assert [doc for doc in docs if doc] == ["d0", "d1", "d2"]


def test_mixed_models_are_refused_across_files_and_in_one_stream(run_tool, tmp_path):
    other = dict(MODEL, name="other", fingerprint="sha256:" + "b2" * 32)
    (tmp_path / "a").write_bytes(trace_bytes(1))
    (tmp_path / "b").write_bytes(trace_bytes(1, model=other))
    across = run_tool(moe_cat, [str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "out")])
    assert across.exit_code == 2 and "refusing to mix models" in across.stderr and across.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    piped = run_tool(moe_cat, ["--check"], input=(tmp_path / "a").read_bytes() + (tmp_path / "b").read_bytes())
    assert piped.exit_code == 2 and "segment 2 comes from another model" in piped.stderr


def test_copy_streams_library_call(tmp_path):
    out = io.BytesIO()
    summary = copy_streams([("x", io.BytesIO(stream_bytes(sequences(2))))], out, encoding="jsonl")
    assert summary.records == 2 and summary.complete and out.getvalue().startswith(b'{"type":"header"')


def test_cat_a_b_pipe_and_head_in_a_real_shell_pipeline(tmp_path):
    """`cat a b | moe-cat` works and `moe-cat ... | head -1` exits quietly (bin/ launcher, real pipes)."""
    big = [{"type": "sequence", "doc_id": f"d{index}", "text": "x" * 200} for index in range(3000)]
    (tmp_path / "a.zst").write_bytes(stream_bytes(big))
    (tmp_path / "b.zst").write_bytes(stream_bytes(big[:5]))
    script = ('cat a.zst b.zst | "$MOE_CAT" --summary > summary.json; echo "cat=$?"; '
              '"$MOE_CAT" a.zst --format jsonl | head -1 > first.jsonl; echo "head=${PIPESTATUS[0]}"')
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
                            env={"MOE_CAT": str(ROOT / "bin" / "moe-cat"), "PATH": "/usr/bin:/bin"})
    assert result.stderr == ""
    assert "cat=0" in result.stdout and json.loads((tmp_path / "summary.json").read_text())["records"] == 3005
    assert result.stdout.split("head=")[1].strip() in ("0", "141")
    assert json.loads((tmp_path / "first.jsonl").read_text())["type"] == "header"


def test_missing_input_fails_before_any_output(run_tool, tmp_path):
    (tmp_path / "a").write_bytes(stream_bytes(sequences(1)))
    result = run_tool(moe_cat, [str(tmp_path / "a"), str(tmp_path / "missing")])
    assert result.exit_code == 2 and result.stdout_bytes == b""
    assert result.stderr == f"moe-cat: cannot open {tmp_path / 'missing'}: no such file\n"


def test_check_reads_record_contents_not_only_framing(run_tool):
    """--check validates every field against the kind's schema (formats/trace.md), in msgpack+zstd too."""
    records = valid_sequences(2)
    records[1]["experts"] = records[1]["experts"].astype("|i1")  # signed expert ids: the spec says unsigned
    raw = stream_bytes(records, header_extra=TRACE_HEADER)
    assert run_tool(moe_cat, ["--format", "jsonl"], input=raw).exit_code == 0  # copying checks framing only
    result = run_tool(moe_cat, ["--check"], input=raw)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "sequence record 2 (doc 'd1'): 'experts' has dtype |i1: expert ids are unsigned" in result.stderr
    bad_end = stream_bytes(valid_sequences(1), header_extra=TRACE_HEADER, end_extra={"windows": -1})
    result = run_tool(moe_cat, ["--check"], input=bad_end)
    assert result.exit_code == 2 and "trace end record: 'windows' must be an integer >= 0" in result.stderr
