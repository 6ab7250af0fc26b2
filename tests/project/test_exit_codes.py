"""One line and the documented exit code (moetools/cli/common.py EXIT_STATUS_TEXT), for the cases that
used to end in "internal error" (exit 1), a silent exit 1 or another tool's wording.

2: a trace record whose experts is not an array, a truncated adapter.safetensors, an empty choice;
3: empty input (/dev/null) to every tool that reads a file, moe-report and moe-tune included;
141: the reader of a table on standard output went away.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli_checks import invoke, one_line
from tests.tiny_models import save_tiny_olmoe

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "formats" / "examples"
WORDS = ["the", "a", "of", "court", "law", "judge", "patient", "dose", "fever", "code", "loop", "def"]




@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("exit-codes")
    save_tiny_olmoe(root / "olmoe", WORDS)
    lines = [json.dumps({"id": f"d{i}", "domain": ("legal", "medical")[i % 2], "text": " ".join((WORDS * 3)[i:i + 9])})
             for i in range(8)]
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("tool,args", [
    ("moe-score", ["{trace}"]),
    ("moe-sample", ["{trace}", "-o", "{out}/samples.msgpack.zst"]),
    ("moe-cat", ["--check", "{trace}"]),
])
def test_a_trace_whose_experts_is_a_string_is_bad_input(tool, args, tmp_path):
    lines = (EXAMPLES / "trace" / "hand-written" / "valid" / "full.jsonl").read_text().splitlines(keepends=True)
    record = json.loads(lines[1])
    record["experts"] = "oops"
    trace = tmp_path / "oops.jsonl"
    trace.write_text(lines[0] + json.dumps(record) + "\n" + lines[2])
    result = invoke(tool, [a.format(trace=trace, out=tmp_path) for a in args] + ["-q"])
    one_line(result, tool, 2, "sequence record 1 (doc 'd1')", "'experts' is missing or not an array")


def test_merge_of_a_truncated_adapter_is_bad_input(tiny, tmp_path):
    tuned = tmp_path / "tuned"
    made = invoke("moe-tune", [tiny / "olmoe", "--data", tiny / "corpus.jsonl", "--mode", "full", "--steps", "1",
                               "--batch-size", "2", "--seq-len", "8", "-o", tuned, "-q"])
    assert made.exit_code == 0, made.output
    tensors = tuned / "adapter.safetensors"
    data = tensors.read_bytes()
    tensors.write_bytes(data[:len(data) // 2])
    merged = tmp_path / "merged"
    result = invoke("moe-tune", ["merge", tuned, "-o", merged])
    one_line(result, "moe-tune", 2, f"{tensors}: not a readable safetensors file (truncated or damaged?)")
    assert not merged.exists() and not (tmp_path / "merged.partial").exists()


def test_an_empty_choice_is_bad_input(tiny, tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"question": "the court", "choices": ["law", ""], "answer": 0}) + "\n")
    result = invoke("moe-eval", [tiny / "olmoe", "--choices", items, "-o", tmp_path / "eval.jsonl"])
    one_line(result, "moe-eval", 2, f"{items}:1: choice 1 is empty")
    assert not (tmp_path / "eval.jsonl").exists()


def test_a_closed_pipe_after_the_score_table_exits_141():
    """`moe-score --format table | head -3`: the table is written by rich, whose own broken-pipe handler
    exits 1; the tool exits 141 as every tool does, quietly. The reading end is closed before the
    tool writes, so the write always meets a closed pipe."""
    trace = EXAMPLES / "trace" / "valid" / "olmoe-tiny.jsonl"
    process = subprocess.Popen([str(ROOT / "bin" / "moe-score"), str(trace), "--format", "table", "-q"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    process.stdout.close()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 141 and stderr == b"", (process.returncode, stderr)


#: every tool that reads a file, given /dev/null where it reads one ({null}); each says "empty input", exit 3
DEV_NULL = {
    "moe-cat": [["{null}"], ["--check", "{null}"]],
    "moe-sample": [["{null}", "-o", "{out}/s.msgpack.zst"]],
    "moe-explain": [["{null}", "--backend", "offline", "-o", "{out}/labels.jsonl"]],
    "moe-score": [["{null}"], ["join", "{null}", "{null}"]],
    "moe-select": [["--by", "das", "{null}"]],
    "moe-report": [["{null}", "-o", "{out}/report.html"]],
    "moe-trace": [["{model}", "{null}", "-o", "{out}/t.msgpack.zst"]],
    "moe-eval": [["{model}", "--data", "{null}", "-o", "{out}/e.jsonl"],
                 ["{model}", "--choices", "{null}", "-o", "{out}/e.jsonl"]],
    "moe-tune": [["{model}", "--data", "{null}", "--mode", "full", "-o", "{out}/tuned"],
                 ["{model}", "--data", "{corpus}", "--experts", "{null}", "-o", "{out}/tuned"]],
    "moe-mask": [["{model}", "--experts", "{null}", "-o", "{out}/masked"]],
    "moe-probe": [["neurons", "{model}", "{null}"], ["causal", "{model}", "{null}", "--backend", "offline"]],
    "monet-train": [["--data", "{null}", "-o", "{out}/monet"]],
}


@pytest.mark.parametrize("tool", sorted(DEV_NULL))
def test_dev_null_is_empty_input_to_every_tool(tool, tiny, tmp_path):
    failures = []
    for number, template in enumerate(DEV_NULL[tool]):
        out = tmp_path / f"out{number}"
        out.mkdir()
        args = [a.format(null=os.devnull, model=tiny / "olmoe", corpus=tiny / "corpus.jsonl", out=out)
                for a in template]
        result = invoke(tool, args + ["-q"])
        lines = result.stderr.splitlines()
        if result.exit_code != 3 or len(lines) != 1 or not lines[0].startswith(f"{tool}: ") \
                or "empty input" not in lines[0]:
            failures.append(f"{' '.join(template)}: exit {result.exit_code}: {result.stderr.strip()!r}")
        elif any(out.iterdir()):
            failures.append(f"{' '.join(template)}: left {sorted(p.name for p in out.iterdir())}")
    assert not failures, "\n".join(failures)


def test_the_exit_status_text_documents_empty_input_and_non_finite_numbers():
    import re

    from moetools.cli.common import EXIT_STATUS_TEXT

    meaning = {code: " ".join(text.split()) for code, text in re.findall(r"^(\d+) +(.*?)(?=^\d|\Z)", EXIT_STATUS_TEXT,
                                                                           re.MULTILINE | re.DOTALL)}
    assert "empty input" in meaning["3"] and "/dev/null" in meaning["3"]
    assert "NaN or infinite number" in meaning["2"] and "non-finite loss" in meaning["1"]
