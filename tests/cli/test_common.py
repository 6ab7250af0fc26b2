"""moetools.cli.common: the error boundary, exit codes, atomic outputs, --version, stdin/stdout, -q, progress."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

import click
import numpy as np
import pytest

from moetools import __version__
from moetools.cli.cat import command as moe_cat
from moetools.cli.common import (
    input_argument,
    open_stream_writer,
    output_options,
    partial_path,
    read_input,
    say,
    tool,
    tool_info,
    warn,
)
from moetools.errors import FormatError, TruncatedStreamError
from moetools.streams import read_stream
from tests.conftest import stream_bytes


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
    assert quiet.stderr.rstrip().endswith("(rerun with -v for a traceback)")
    verbose = run_tool(probe, ["--fail", "crash", "-v"])
    assert verbose.exit_code == 1 and "Traceback (most recent call last)" in verbose.stderr
    # the hint is only for runs without -v
    assert "rerun with -v" not in verbose.stderr


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


@tool("moe-talk", example="moe-talk -q")
def talk():
    """A test tool: one informational line and one warning on stderr."""
    say("working")
    warn("careful")


def test_quiet_silences_information_but_not_warnings(run_tool):
    loud = run_tool(talk, [])
    assert loud.exit_code == 0 and loud.stderr == "moe-talk: working\nmoe-talk: warning: careful\n"
    quiet = run_tool(talk, ["-q"])
    assert quiet.exit_code == 0 and quiet.stderr == "moe-talk: warning: careful\n"


ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT / "formats" / "examples" / "samples" / "trace.jsonl"


def _stderr_of_moe_sample(tmp_path, *args, terminal: bool) -> bytes:
    """moe-sample's stderr when stderr is a pseudo-terminal (``terminal``) or a pipe."""
    return _stderr_of(["moe-sample", str(TRACE), "--format", "jsonl", "-o", str(tmp_path / "o.jsonl"), *args],
                      terminal=terminal)


def _stderr_of(arguments: list[str], *, terminal: bool) -> bytes:
    """A tool's stderr (``arguments[0]`` in bin/) when stderr is a pseudo-terminal (``terminal``) or a pipe."""
    command = [str(ROOT / "bin" / arguments[0]), *arguments[1:]]
    if "-o" in arguments:
        command.append("--force")  # called three times with the same -o: each run replaces the last one's output
    if not terminal:
        return subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
                              check=True).stderr
    master, slave = pty.openpty()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert process.wait(timeout=120) == 0, seen
    return seen


def test_progress_bar_only_on_a_terminal_and_never_with_quiet(tmp_path):
    on_terminal = _stderr_of_moe_sample(tmp_path, terminal=True)
    assert b"\x1b[" in on_terminal and b"reading the trace" in on_terminal  # rich drew its bar
    on_pipe = _stderr_of_moe_sample(tmp_path, terminal=False)
    assert b"\x1b" not in on_pipe and on_pipe.startswith(b"moe-sample: ")  # plain lines only
    assert _stderr_of_moe_sample(tmp_path, "-q", terminal=True) == b""


def _assert_bar_only_on_a_terminal(arguments: list[str], description: bytes, quiet_stderr: bytes = b"") -> bytes:
    """Returns the stderr seen on the terminal."""
    on_terminal = _stderr_of(arguments, terminal=True)
    assert b"\x1b[" in on_terminal and description in on_terminal, on_terminal  # rich drew its bar
    on_pipe = _stderr_of(arguments, terminal=False)
    assert b"\x1b" not in on_pipe and description not in on_pipe, on_pipe
    assert _stderr_of([*arguments, "-q"], terminal=True) == quiet_stderr
    return on_terminal


def test_moe_score_bar_only_on_a_terminal_and_never_with_quiet(tmp_path):
    arguments = ["moe-score", str(TRACE), "--format", "jsonl", "-o", str(tmp_path / "scores.jsonl")]
    _assert_bar_only_on_a_terminal(arguments, b"scoring tokens")


def test_moe_eval_bar_only_on_a_terminal_and_never_with_quiet(tmp_path):
    from tests.tiny_models import save_tiny_olmoe

    words = [f"w{i}" for i in range(12)]
    save_tiny_olmoe(tmp_path / "model", words, seed=0)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(f'{{"text": "w1 w2 w{n} w3", "domain": "d{n % 2}"}}\n' for n in range(4)))
    items = tmp_path / "items.jsonl"
    items.write_text('{"question": "w1 w2", "choices": ["w3", "w4 w5"], "answer": 0}\n')
    arguments = ["moe-eval", str(tmp_path / "model"), "--data", str(corpus), "--choices", str(items),
                 "-o", str(tmp_path / "eval.jsonl")]
    on_terminal = _assert_bar_only_on_a_terminal(arguments, b"model 0: documents")
    assert b"model 0: choice items" in on_terminal
    # the time left: done/total in documents of --data and an ETA; the choice items out of their count
    assert b"/4 documents" in on_terminal and b"ETA " in on_terminal, on_terminal
    assert b"/1 " in on_terminal


def test_a_failed_write_to_stdout_is_reported_not_swallowed():
    """The flush/close check of stdout: a full disk (/dev/full) is exit 1 with one line, not a silent 0."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with open("/dev/full", "wb") as full:
        result = subprocess.run([str(ROOT / "bin" / "moe-cat"), str(ROOT / "formats" / "examples" / "valid" /
                                 "minimal.jsonl"), "--format", "jsonl"], stdout=full, stderr=subprocess.PIPE,
                                text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert result.stderr == "moe-cat: No space left on device\n"


def test_tool_info_outside_a_command_drops_secrets():
    assert tool_info({"api_key": "x", "path": __import__("pathlib").Path("/tmp/a")})["args"] == {"path": "/tmp/a"}
