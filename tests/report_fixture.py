"""A small real pipeline for moe-report's tests: a synthetic trace through moe-sample, moe-explain (offline, and
an LLM explainer for a few experts), moe-score (routing, and judged by an LLM with the offline labels, joined) and
moe-select (their real commands), plus an eval stream naming the same model. The LLM is tests/llm_stub.py, a real
OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from moetools.cli import load_command
from tests.trace_factory import MODEL, make_records, write_trace


def run_tool(name: str, args: list[str]) -> None:
    result = CliRunner().invoke(load_command(name), [*args, "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def write_eval(path, fingerprint: str, experts=None) -> None:
    """An eval stream of the model and a masked copy of it (formats/eval.md); ``experts``: the experts.json
    the masked copy masked (recorded by path and sha256, as moe-mask does)."""
    import hashlib

    source = None if experts is None else {"file": {"path": str(experts.resolve()),
                                                   "sha256": "sha256:" + hashlib.sha256(experts.read_bytes()).hexdigest()}}
    lines = [
        {"type": "header", "format": "moetools", "version": 1, "kind": "eval", "tool": {"name": "moe-eval"},
         "model": None, "models": ["synthetic-moe", "masked"], "data": "val.jsonl", "choices": None,
         "domain_field": "domain", "max_length": 64},
        {"type": "model", "model": 0, "identity": {"name": "synthetic-moe", "fingerprint": fingerprint}, "masked": None},
        {"type": "domain", "model": 0, "domain": "code", "documents": 4, "tokens": 600, "loss": 3.2,
         "perplexity": 24.5, "delta_loss": None},
        {"type": "model", "model": 1, "identity": {"name": "masked", "fingerprint": "sha256:other"},
         "masked": {"mode": "pruned", "base": {"name": "synthetic-moe", "fingerprint": fingerprint},
                    "experts": source}},
        {"type": "domain", "model": 1, "domain": "code", "documents": 4, "tokens": 600, "loss": 3.5,
         "perplexity": 33.1, "delta_loss": 0.3, "delta_loss_ci95": [0.2, 0.4]},
        {"type": "end", "count": 4},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def judge_answer(body: dict) -> str:
    """The stub scorer: picks the odd-numbered examples (right about half the time: ✓ and ✗ both on a card)."""
    shown = re.findall(r"^Example (\d+):", body["messages"][-1]["content"], flags=re.MULTILINE)
    return ", ".join(number for number in shown if int(number) % 2) or "None"


def keep_labels(source, target, experts: set) -> None:
    """The labels of ``experts`` only: an LLM labels a few experts, as the demo's SmolLM2 does."""
    from moetools.streams.files import open_stream_writer, read_input

    reader = read_input(str(source), kinds="labels")
    header = reader.header
    records = [r for r in reader if r.get("type") != "label" or (r["layer"], r["expert"]) in experts]
    extra = {k: v for k, v in header.items() if k not in ("type", "format", "version", "kind", "tool", "model")}
    with open_stream_writer(str(target), "labels", "jsonl", tool=header.get("tool"), model=header.get("model"),
                            header_extra=extra) as writer:
        for record in records:
            writer.write(record)


def build_inputs(directory) -> dict:
    """Every input moe-report reads, for one synthetic model (2 layers x 8 experts)."""
    from tests.llm_stub import LLMStub

    paths = {name: directory / file for name, file in (
        ("trace", "trace.msgpack.zst"), ("samples", "samples.msgpack.zst"), ("labels", "labels.jsonl"),
        ("llm_labels", "llm.labels.jsonl"), ("scores", "scores.jsonl"), ("experts", "code.json"),
        ("eval", "eval.jsonl"))}
    paths["trace"].write_bytes(write_trace(make_records(documents=8, tokens=150, logit_lens=3, vocab=20)))
    run_tool("moe-sample", [str(paths["trace"]), "--top", "3", "--weighted", "1", "--negatives", "1",
                            "-o", str(paths["samples"])])
    run_tool("moe-explain", [str(paths["samples"]), "--backend", "offline", "--no-cache", "-o", str(paths["labels"])])
    routing, judged = directory / "routing.scores.jsonl", directory / "judged.scores.jsonl"
    run_tool("moe-score", [str(paths["trace"]), "--permutations", "20", "-o", str(routing)])
    run_tool("moe-select", [str(routing), "--by", "das", "--domain", "code", "--top", "2",
                            "-o", str(paths["experts"])])
    every = directory / "llm.all.labels.jsonl"
    with LLMStub() as stub:
        run_tool("moe-explain", [str(paths["samples"]), "--backend", "openai", "--api-base", stub.url,
                                 "--model", "stub-model", "--no-cache", "-o", str(every)])
        stub.answer = judge_answer
        run_tool("moe-score", [str(paths["samples"]), "--labels", str(paths["labels"]), "--api-base", stub.url,
                               "--model", "stub-scorer", "--repeats", "2", "--no-cache", "-o", str(judged)])
    run_tool("moe-score", ["join", str(routing), str(judged), "-o", str(paths["scores"])])
    chosen = json.loads(paths["experts"].read_text())["experts"]
    keep_labels(every, paths["llm_labels"], {(int(layer), e) for layer, ids in chosen.items() for e in ids})
    write_eval(paths["eval"], MODEL["fingerprint"], paths["experts"])
    return paths
