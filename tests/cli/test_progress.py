"""Progress that tells the time left: done/total, rate and ETA on a terminal; in a log (stderr not a
terminal, e.g. a SLURM job's) at most one line a minute; nothing with -q.

The minute is measured with an injected clock, not waited for.
"""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from moetools.cli import common
from moetools.progress import BytesRead, LineProgress, format_amount, format_duration, progress_line
from tests.cli.test_common import _stderr_of
from tests.tiny_models import save_tiny_olmoe

WORDS = [f"w{i}" for i in range(12)]


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_log_gets_at_most_one_line_a_minute_with_total_rate_and_eta():
    clock, lines = Clock(), []
    with LineProgress("tracing corpus", total=600e6, unit="bytes", write=lines.append, clock=clock) as bar:
        for _ in range(600):  # a 10-minute run: 1 MB a second, advanced every 0.25 s
            for _ in range(4):
                clock.now += 0.25
                bar.advance(0.25e6)
    assert len(lines) == 10  # minutes 1..10, never two within a minute
    assert lines[0] == "tracing corpus: 60.0 MB/600.0 MB (10%), 1.0 MB/s, ETA 0:09:00, elapsed 0:01:00"
    assert lines[4].startswith("tracing corpus: 300.0 MB/600.0 MB (50%)") and "ETA 0:05:00" in lines[4]


def test_a_run_shorter_than_a_minute_writes_no_line_and_bursts_do_not_add_lines():
    clock, lines = Clock(), []
    bar = LineProgress("model 0: data", total=100, write=lines.append, clock=clock)
    for _ in range(800):
        clock.now += 0.0625  # 50 s in steps a float holds exactly
        bar.advance(0.125)
    assert lines == []
    clock.now += 10
    for _ in range(50):  # many batches in the same second: one line
        bar.advance(0)
    assert len(lines) == 1 and "/100 (100%)" in lines[0]
    clock.now += 59.5
    bar.advance(0)
    assert len(lines) == 1
    clock.now += 0.5
    bar.update(advance=0)
    assert len(lines) == 2


def test_without_a_total_the_line_has_the_rate_and_no_eta():
    line = progress_line("tracing tokens", 18432, None, "tokens", 120)
    assert line == "tracing tokens: 18432 tokens, 153.6 tokens/s, elapsed 0:02:00"
    assert format_duration(3725.4) == "1:02:05" and format_amount(1_234_567, "bytes") == "1.2 MB"


def test_bytes_read_follows_the_file_position(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"text": "a"}\n' * 1000)
    advanced = []

    class Bar:
        def advance(self, amount):
            advanced.append(amount)

    with open(path, "rb") as source:
        read = BytesRead(source)
        assert read.total == 14000
        for number, _ in enumerate(source, start=1):
            if number % 100 == 0:
                read.catch_up(Bar())
    assert sum(advanced) == 14000 and all(amount >= 0 for amount in advanced)


def test_the_cli_factory_writes_lines_to_a_log_and_nothing_with_quiet(monkeypatch, capsys):
    clock = Clock()
    monkeypatch.setattr(common, "log_progress_clock", clock)
    monkeypatch.setattr(common.state, "tool", "moe-trace")
    monkeypatch.setattr(common.state, "quiet", False)  # not left over from an earlier test's -q
    with common.progress("tracing corpus", total=1000, unit="bytes") as bar:  # stderr is not a terminal here
        assert isinstance(bar, LineProgress)
        clock.now += 61
        bar.advance(500)
    assert capsys.readouterr().err == \
        "moe-trace: tracing corpus: 500 B/1.0 kB (50%), 8 B/s, ETA 0:01:01, elapsed 0:01:01\n"
    monkeypatch.setattr(common.state, "quiet", True)
    with common.progress("tracing corpus", total=1000, unit="bytes") as bar:
        clock.now += 120
        bar.advance(500)
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def model_and_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    save_tiny_olmoe(root / "model", WORDS, seed=0)
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": " ".join(WORDS[n % 12:] + WORDS * 2), "domain": f"d{n % 2}"})
                              + "\n" for n in range(400)))
    return root / "model", corpus


def test_moe_trace_shows_the_corpus_total_and_an_eta_on_a_terminal(model_and_corpus, tmp_path):
    model, corpus = model_and_corpus
    arguments = ["moe-trace", str(model), str(corpus), "--max-length", "16", "--batch-size", "4",
                 "-o", str(tmp_path / "trace.msgpack.zst")]
    on_terminal = _stderr_of(arguments, terminal=True)
    assert b"tracing corpus" in on_terminal and re.search(rb"ETA \d:\d\d:\d\d", on_terminal), on_terminal
    assert f"/{format_amount(corpus.stat().st_size, 'bytes')}".encode() in on_terminal
    assert _stderr_of([*arguments, "-q"], terminal=True) == b""


def test_moe_trace_in_a_log_writes_progress_lines_as_the_minutes_pass(model_and_corpus, tmp_path, monkeypatch):
    """The real trace, with a clock that moves a minute per reading: a line per batch, with total and ETA."""
    from moetools.cli.trace import command

    clock = Clock()

    def minute_later():
        clock.now += 60
        return clock.now

    monkeypatch.setattr(common, "log_progress_clock", minute_later)
    result = CliRunner().invoke(command, [str(model_and_corpus[0]), str(model_and_corpus[1]), "--max-length", "16",
                                          "--batch-size", "8", "-o", str(tmp_path / "t.msgpack.zst")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("moe-trace: tracing corpus: ")]
    total = format_amount(model_and_corpus[1].stat().st_size, "bytes")
    assert len(lines) >= 3 and all(f"/{total} (" in line and "ETA " in line for line in lines), result.stderr
    scale = {"B": 1, "kB": 1e3, "MB": 1e6}
    done = [float(number) * scale[unit] for number, unit in
            (re.search(r"tracing corpus: ([\d.]+) (\w+)/", line).groups() for line in lines)]
    assert done == sorted(done) and done[0] < done[-1]
