"""A small real pipeline for moe-report's tests: a synthetic trace through moe-sample, moe-explain (offline),
moe-score and moe-select (their real commands), plus an eval stream naming the same model."""

from __future__ import annotations

import json

from click.testing import CliRunner
from trace_factory import MODEL, make_records, write_trace

from moetools.cli import load_command


def run_tool(name: str, args: list[str]) -> None:
    result = CliRunner().invoke(load_command(name), [*args, "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def write_eval(path, fingerprint: str) -> None:
    """An eval stream of the model and a masked copy of it (formats/eval.md)."""
    lines = [
        {"type": "header", "format": "moetools", "version": 1, "kind": "eval", "tool": {"name": "moe-eval"},
         "model": None, "models": ["synthetic-moe", "masked"], "data": "val.jsonl", "choices": None,
         "domain_field": "domain", "max_length": 64},
        {"type": "model", "model": 0, "identity": {"name": "synthetic-moe", "fingerprint": fingerprint}, "masked": None},
        {"type": "domain", "model": 0, "domain": "code", "documents": 4, "tokens": 600, "loss": 3.2,
         "perplexity": 24.5, "delta_loss": None},
        {"type": "model", "model": 1, "identity": {"name": "masked", "fingerprint": "sha256:other"},
         "masked": {"mode": "pruned", "base": {"name": "synthetic-moe", "fingerprint": fingerprint}}},
        {"type": "domain", "model": 1, "domain": "code", "documents": 4, "tokens": 600, "loss": 3.5,
         "perplexity": 33.1, "delta_loss": 0.3},
        {"type": "end", "count": 4},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def build_inputs(directory) -> dict:
    """Every input moe-report reads, for one synthetic model (2 layers x 8 experts)."""
    paths = {name: directory / file for name, file in (
        ("trace", "trace.msgpack.zst"), ("samples", "samples.msgpack.zst"), ("labels", "labels.jsonl"),
        ("scores", "scores.jsonl"), ("experts", "code.json"), ("eval", "eval.jsonl"))}
    paths["trace"].write_bytes(write_trace(make_records(documents=8, tokens=150, logit_lens=3)))
    run_tool("moe-sample", [str(paths["trace"]), "--top", "3", "--weighted", "1", "--negatives", "1",
                            "-o", str(paths["samples"])])
    run_tool("moe-explain", [str(paths["samples"]), "--backend", "offline", "--no-cache", "-o", str(paths["labels"])])
    run_tool("moe-score", [str(paths["trace"]), "--permutations", "20", "-o", str(paths["scores"])])
    run_tool("moe-select", [str(paths["scores"]), "--by", "das", "--domain", "code", "--top", "2",
                            "-o", str(paths["experts"])])
    write_eval(paths["eval"], MODEL["fingerprint"])
    return paths
