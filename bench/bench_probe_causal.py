"""moe-probe causal: labels per minute with the loopback LLM stub at concurrency 32 vs 1.

The stub (moetools.testing.llm_stub, a real HTTP server) answers the trigger/target JSON after ``--latency``
seconds, as a remote LLM would. Measured side by side in one run, the response cache off: the
proposal phase alone (what concurrency changes) and the whole command (proposals + DLA on a tiny
2-layer OLMoE, 2 CPU cores shared), both as labels per minute.

    .venv/bin/python bench/bench_probe_causal.py [--labels 64] [--latency 0.25]
    .venv/bin/python bench/bench_probe_causal.py --quick      # 16 labels
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from _harness import measure, parser, write_result


def main(argv=None) -> None:
    options = parser(__doc__, "probe_causal")  # --quick: 16 labels
    options.add_argument("--labels", type=int, default=None, help="labels (64; --quick: 16)")
    options.add_argument("--latency", type=float, default=0.25)
    args = options.parse_args(argv)
    args.labels = args.labels or (16 if args.quick else 64)

    from click.testing import CliRunner

    from moetools.cli.probe import command as moe_probe
    from moetools.llm import ResponseCache, make_client
    from moetools.models import model_identity
    from moetools.models.loader import load_model
    from moetools.probe.causal import CausalOptions, propose_llm
    from moetools.streams.files import open_stream_writer
    from moetools.testing.llm_stub import LLMStub
    from moetools.testing.tiny_models import save_tiny_olmoe

    words = [f"w{i}" for i in range(40)]
    work = Path(tempfile.mkdtemp(prefix="bench_probe_causal-"))
    save_tiny_olmoe(work / "model", words)
    loaded = load_model(str(work / "model"))
    identity = model_identity(loaded.model, loaded.adapter, path=str(work / "model"))
    labels = [{"type": "label", "layer": n % 2, "expert": (n // 2) % 8, "status": "ok",
               "explanation": f"label {n}: tokens w{n % 40}"} for n in range(args.labels)]
    with open_stream_writer(str(work / "labels.jsonl"), "labels", "jsonl", True, model=identity) as writer:
        for label in labels:
            writer.write(label)
    answer = json.dumps({"triggers": ["w1 w2 w3", "w4 w5"], "targets": ["w7", "w8"]})
    results = {}
    with LLMStub(latency=args.latency) as stub:
        stub.answer = lambda body: answer
        for concurrency in (1, 32):
            client = make_client("openai", {"api_base": stub.url, "model": "stub", "concurrency": concurrency,
                                            "max_tokens": 256})
            start = time.perf_counter()
            proposals = propose_llm(client, ResponseCache(work / "cache", namespace="probe", enabled=False),
                                    labels, CausalOptions())
            proposing = time.perf_counter() - start
            assert all(p.triggers for p in proposals)
            with measure() as cost:
                result = CliRunner().invoke(moe_probe, ["causal", str(work / "model"), str(work / "labels.jsonl"),
                                                        "--api-base", stub.url, "--model", "stub", "--no-cache",
                                                        "--concurrency", str(concurrency), "-q",
                                                        "-o", str(work / f"out{concurrency}.jsonl")])
            whole = cost["wall_s"]
            assert result.exit_code == 0, result.output
            results[f"concurrency_{concurrency}"] = {
                "proposal_seconds": round(proposing, 3), "proposal_labels_per_min": round(60 * len(labels) / proposing, 1),
                "command_seconds": round(whole, 3), "command_labels_per_min": round(60 * len(labels) / whole, 1),
                "max_in_flight": client.accounting.max_in_flight, "command": cost}
    c1, c32 = results["concurrency_1"], results["concurrency_32"]
    report = {"bench": "probe_causal", "labels": len(labels), "stub_latency_s": args.latency,
              "model": "tiny OLMoE (2 layers, 8 experts, d=32)", **results,
              "proposal_speedup_32_vs_1": round(c1["proposal_seconds"] / c32["proposal_seconds"], 1),
              "command_speedup_32_vs_1": round(c1["command_seconds"] / c32["command_seconds"], 1),
              "notes": [("proposal phase: LLM requests only (what concurrency changes); command: model load + "
                         "proposals + forward passes + DLA of every expert of the label's layer (CPU work, the same "
                         "at both concurrencies, on 2 cores shared with other jobs: noisy)")]}
    write_result(args, report, quiet=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
