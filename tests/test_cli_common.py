"""moetools.cli.common: the error boundary, exit codes, atomic outputs, --version, stdin/stdout."""

from __future__ import annotations

import click
import numpy as np
from conftest import stream_bytes

from moetools import __version__
from moetools.cli.cat import command as moe_cat
from moetools.cli.common import (
    input_argument,
    open_stream_writer,
    output_options,
    partial_path,
    read_input,
    tool,
    tool_info,
)
from moetools.errors import FormatError, TruncatedStreamError
from moetools.streams import read_stream


@tool("moe-probe", example="moe-probe --fail format -o out.zst")
@input_argument()
@output_options()
@click.option("--fail", type=click.Choice(["none", "format", "truncated", "crash", "interrupt", "pipe"]),
              default="none")
@click.option("--api-key", default=None)
def probe(input, output, fmt, uncompressed, fail, api_key):
    """A test tool: copies records, failing on request halfway through."""
    reader = read_input(input) if input != "-" else None
    with open_stream_writer(output, "trace", fmt, uncompressed, model=reader.header["model"] if reader else None,
                            header_extra={"probe": True}) as writer:
        writer.write({"type": "sequence", "x": np.arange(3, dtype="<u2")})
        if fail == "format":
            raise FormatError("bad thing in record 2")
        if fail == "truncated":
            raise TruncatedStreamError("input stopped early")
        if fail == "crash":
            raise RuntimeError("boom")
        if fail == "interrupt":
            raise KeyboardInterrupt
        if fail == "pipe":
            raise BrokenPipeError
        writer.end_extra = {"note": "done"}


def test_success_writes_a_complete_stream_atomically(run_tool, tmp_path):
    source, out = tmp_path / "in.zst", tmp_path / "out.zst"
    source.write_bytes(stream_bytes([]))
    result = run_tool(probe, [str(source), "-o", str(out), "--api-key", "secret"])
    assert result.exit_code == 0 and result.stderr == ""
    reader = read_stream(out.open("rb"))
    assert len(list(reader)) == 1 and reader.ends == [{"type": "end", "count": 1, "note": "done"}]
    assert reader.header["probe"] is True and reader.header["tool"]["name"] == "moe-probe"
    assert "api_key" not in reader.header["tool"]["args"] and reader.header["tool"]["version"] == __version__
    assert not partial_path(out).exists()


def test_an_error_leaves_no_output_and_no_partial_file(run_tool, tmp_path):
    out = tmp_path / "out.zst"
    out_before = b"previous complete output"
    out.write_bytes(out_before)
    result = run_tool(probe, ["--fail", "format", "-o", str(out)])
    assert result.exit_code == 2 and result.stderr == "moe-probe: bad thing in record 2\n"
    assert out.read_bytes() == out_before and not partial_path(out).exists()


def test_exit_codes_follow_the_contract(run_tool, tmp_path):
    codes = {fail: run_tool(probe, ["--fail", fail, "-o", str(tmp_path / fail)]) for fail in
             ("truncated", "crash", "interrupt")}
    assert codes["truncated"].exit_code == 3 and codes["truncated"].stderr == "moe-probe: input stopped early\n"
    assert codes["crash"].exit_code == 1
    assert codes["crash"].stderr == "moe-probe: internal error: RuntimeError: boom (rerun with -v for a traceback)\n"
    assert codes["interrupt"].exit_code == 130 and codes["interrupt"].stderr.strip() == "moe-probe: interrupted"  # click adds a blank line after ^C


def test_stdout_closed_by_the_reader_is_a_quiet_141(run_tool):
    result = run_tool(probe, ["--fail", "pipe", "--format", "jsonl"])
    assert result.exit_code == 141 and result.stderr == ""


def test_error_on_stdout_leaves_a_stream_that_reads_as_truncated(run_tool):
    result = run_tool(probe, ["--fail", "format"])
    assert result.exit_code == 2
    reader = read_stream(__import__("io").BytesIO(result.stdout_bytes))
    try:
        list(reader)
    except TruncatedStreamError:
        pass
    else:
        raise AssertionError("an output abandoned on error must not read as complete")


def test_verbose_shows_a_traceback_otherwise_one_line(run_tool):
    quiet = run_tool(probe, ["--fail", "crash"])
    assert "Traceback" not in quiet.stderr and quiet.stderr.count("\n") == 1
    verbose = run_tool(probe, ["--fail", "crash", "-v"])
    assert verbose.exit_code == 1 and "Traceback (most recent call last)" in verbose.stderr
    assert verbose.stderr.rstrip().endswith("(rerun with -v for a traceback)")


def test_missing_file_directory_and_bad_option_are_usage_errors(run_tool, tmp_path):
    missing = run_tool(moe_cat, [str(tmp_path / "nope.zst")])
    assert missing.exit_code == 2 and missing.stderr == f"moe-cat: cannot open {tmp_path / 'nope.zst'}: no such file\n"
    directory = run_tool(moe_cat, ["--check", str(tmp_path)])
    assert directory.exit_code == 2 and directory.stderr.count("\n") == 1
    option = run_tool(moe_cat, ["--no-such-option"])
    assert option.exit_code == 2 and option.stderr.startswith("moe-cat: No such option")
    assert "(try 'moe-cat --help')" in option.stderr
    no_dir = run_tool(probe, ["-o", str(tmp_path / "missing-dir" / "out.zst")])
    assert no_dir.exit_code == 2 and "does not exist" in no_dir.stderr


def test_version_and_help_carry_the_example(run_tool):
    version = run_tool(moe_cat, ["--version"])
    assert version.exit_code == 0 and version.stdout_bytes.decode() == f"moe-cat (moetools) {__version__}\n"
    helped = run_tool(moe_cat, ["--help"])
    assert helped.exit_code == 0 and "moe-cat trace.msgpack.zst --head 2 --format jsonl" in helped.output


def test_quiet_flag_and_tool_info_outside_a_command():
    assert tool_info({"api_key": "x", "path": __import__("pathlib").Path("/tmp/a")})["args"] == {"path": "/tmp/a"}
