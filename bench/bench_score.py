"""Benchmark moe-score: its time against just reading the trace and against tracing, and
its peak memory against trace length, side by side in one run.

A trace of the OLMoE-shaped benchmark model (``bench_sample.SHAPE``: 8 MoE layers, 32 experts,
top-4; windows of 512) with random routing over three domains and a toxicity field is written
with the real StreamWriter (the dtypes and zstd level moe-trace writes). Then, each in a fresh
process (``bench/_harness.py``: wall seconds, CPU seconds, peak RSS from VmHWM):

- ``read``: a StreamReader over every record (what any consumer pays);
- ``score``: the moe-score CLI with its defaults (every metric, 1000-shuffle permutation test)
  and with ``--target-field toxicity``;
- ``score_no_permutations``: ``--permutations 0``;
- ``score_small`` and ``score_small_no_permutations``: the same on the first ~10 % of the trace
  (peak RSS: flat in length without per-document state; with it, it grows by the documents' state,
  documents × L × E × 4 bytes, and the permutation batches, bounded at ~4 MB).

moe-trace's time for the same tokens: a bare forward of the same OLMoE config (one torch thread,
as bench_trace.py measures moe-trace, whose overhead over the bare forward is +2.7 %), timed on
a slice and scaled (``trace_seconds_source`` says so); ``--trace`` runs the real moe-trace CLI
instead (slow: ~15 min per 1M tokens on 2 cores). The machine is shared: CPU-second
ratios (``*_cpu``) are the figures to read; wall ratios are kept beside them. Also timed: the
k-means of ``--model`` at k=5000 on a random 50k x 256 unembedding (``kmeans``).

    .venv/bin/python bench/bench_score.py            # 1M tokens
    .venv/bin/python bench/bench_score.py --quick    # 100k tokens
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _harness import measured_python, parser, write_result
from bench_sample import MAX_LENGTH, SHAPE, _measured, head_tokens

DOMAINS = ("code", "legal", "medical")


def write_trace(path: Path, tokens: int, seed: int = 0) -> dict:
    """Random routing with a mild per-domain preference, in moe-trace's dtypes (ids |u1, 8-bit <f2)."""
    from moetools.streams import StreamWriter
    from moetools.trace.records import stored_values

    layers, experts, top_k = SHAPE["num_hidden_layers"], SHAPE["num_experts"], SHAPE["num_experts_per_tok"]
    rng = np.random.default_rng(seed)
    bias = rng.normal(0, 0.5, size=(len(DOMAINS), layers, 1, experts))
    model = {"name": "bench-olmoe", "path": None, "model_type": "olmoe", "num_layers": layers,
             "moe_layers": list(range(layers)), "num_experts": experts, "top_k": top_k,
             "fingerprint": "sha256:" + "be" * 32}
    header = {"layers": list(range(layers)), "num_experts": experts, "top_k": top_k, "max_length": MAX_LENGTH,
              "precision": 8}
    written = documents = 0
    with open(path, "wb") as out:
        writer = StreamWriter(out, "trace", model=model, header_extra=header, level=7)
        while written < tokens:
            d = documents % len(DOMAINS)
            length = int(min(tokens - written, rng.integers(50, 1500)))
            for start in range(0, length, MAX_LENGTH):
                count = min(MAX_LENGTH, length - start)
                logits = rng.normal(size=(layers, count, experts)) + bias[d]
                probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)          # (L, T, E)
                choice = np.argsort(-probs, axis=-1)[..., :top_k]                       # (L, T, K)
                gates = np.take_along_axis(probs, choice, axis=-1).astype(np.float32)
                contribution = gates * rng.lognormal(0, 0.5, size=gates.shape).astype(np.float32)
                writer.write({"type": "sequence", "doc_id": f"d{documents}", "window": start // MAX_LENGTH,
                              "offset": start, "meta": {"domain": DOMAINS[d], "toxicity": float(rng.random())},
                              "tokens": rng.integers(0, 4000, size=count).astype("<i4"),
                              "pieces": [" w"] * count, "experts": choice.astype("|u1"),
                              "gates": stored_values(gates, 8), "contribution": stored_values(contribution, 8),
                              "prob_sum": probs.sum(axis=1).astype("<f4")})
            written += length
            documents += 1
        writer.close()
    return {"tokens": written, "documents": documents, "bytes": path.stat().st_size}


def kmeans_seconds(rows: int = 50_000, dim: int = 256, k: int = 5000) -> dict:
    """moe-score --model's k-means (paper 002's largest k) on a random unembedding of that size."""
    from moetools.score.jsd import spherical_kmeans

    unembedding = np.random.default_rng(0).normal(size=(rows, dim)).astype(np.float32)
    stats: dict = {}
    start, cpu = time.perf_counter(), time.process_time()
    labels = spherical_kmeans(unembedding, k, seed=0, stats=stats)
    return {"rows": rows, "dim": dim, "k": k, "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu, "iterations": stats.get("iterations"),
            "clusters_used": int(np.unique(labels).size)}


def bare_forward_seconds(tokens: int, measure: int) -> dict:
    import torch
    import transformers

    config = transformers.OlmoeConfig(vocab_size=4400, pad_token_id=1, bos_token_id=None, eos_token_id=None,
                                      **SHAPE)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    torch.set_num_threads(1)
    batch = torch.randint(0, 4400, (4, MAX_LENGTH))
    done = 0
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        while done < measure:
            model(input_ids=batch, use_cache=False, logits_to_keep=1)
            done += batch.numel()
    seconds = (time.perf_counter() - start) * tokens / done
    return {"seconds": seconds, "cpu_seconds": (time.process_time() - cpu) * tokens / done, "measured_tokens": done,
            "source": f"bare forward of the OLMoE config (1 torch thread) over {done} tokens, scaled to {tokens}"}


def _read(path: Path) -> dict:
    """Reading the trace alone, in a fresh process: records, seconds, CPU seconds, peak RSS."""
    code = ("import sys, json; from moetools.streams.files import read_input\n"
            "print(json.dumps({'records': sum(1 for _ in read_input(sys.argv[1], kinds='trace'))}))")
    report = measured_python(["-c", code, str(path)], env={"PATH": "/usr/bin:/bin"})
    return {**json.loads(report["stdout"].strip().splitlines()[-1]), "peak_rss_mb": report["peak_rss_mb"],
            "cpu_seconds": report["cpu_s"], "seconds": report["wall_s"]}


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["seconds"])


def main(argv=None) -> int:
    options = parser(__doc__, "score")  # --quick: 100k tokens
    options.add_argument("--tokens", type=int, default=1_000_000)
    options.add_argument("--repeats", type=int, default=2)
    options.add_argument("--trace", action="store_true", help="time the real moe-trace CLI (slow)")
    options.add_argument("--no-kmeans", action="store_true", help="skip timing the k=5000 k-means")
    args = options.parse_args(argv)
    tokens = 100_000 if args.quick else args.tokens
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        trace = work / "trace.msgpack.zst"
        info = write_trace(trace, tokens)
        small = work / "small.msgpack.zst"
        small_tokens = head_tokens(trace, small, tokens // 10)
        out, full = str(work / "scores.jsonl"), str(work / "full.scores.jsonl")
        runs = {
            "read": best([_read(trace) for _ in range(args.repeats)]),
            "score": best([_measured([str(trace), "-q", "--force", "-o", full], "score") for _ in range(args.repeats)]),
            "score_target_field": best([_measured([str(trace), "-q", "--force", "-o", out, "--target-field", "toxicity"],
                                                  "score") for _ in range(args.repeats)]),
            "score_no_permutations": best([_measured([str(trace), "-q", "--force", "-o", out, "--permutations", "0"], "score")
                                           for _ in range(args.repeats)]),
            "score_small": best([_measured([str(small), "-q", "--force", "-o", out], "score") for _ in range(args.repeats)]),
            "score_small_no_permutations": best([_measured([str(small), "-q", "--force", "-o", out, "--permutations", "0"],
                                                           "score") for _ in range(args.repeats)]),
        }
        summary = json.loads(Path(full).read_text().splitlines()[-1])["summary"]   # the default run's
        if args.trace:
            from bench_sample import run_trace

            traced = run_trace(work / "real.msgpack.zst", tokens, work / "model")
            trace_seconds, trace_cpu, source = traced["seconds"], traced["cpu_seconds"], traced["source"]
        else:
            proxy = bare_forward_seconds(tokens, min(tokens, 16_384))
            trace_seconds, trace_cpu = proxy["seconds"] * 1.027, proxy["cpu_seconds"] * 1.027
            source = proxy["source"] + " x 1.027 (moe-trace's overhead, bench/results/trace.json)"
        kmeans = None if args.no_kmeans else kmeans_seconds(*((10_000, 256, 1000) if args.quick else ()))
    score = runs["score"]
    results = {
        "shape": SHAPE, "max_length": MAX_LENGTH, "tokens": info["tokens"], "documents": info["documents"],
        "trace_bytes": info["bytes"], "small_tokens": small_tokens, "repeats": args.repeats,
        "runs": runs,
        "score_tokens_per_s": info["tokens"] / score["seconds"],
        "read_tokens_per_s": info["tokens"] / runs["read"]["seconds"],
        "score_over_read": score["seconds"] / runs["read"]["seconds"],
        "score_over_read_cpu": score["cpu_seconds"] / runs["read"]["cpu_seconds"],
        "score_no_permutations_over_read_cpu": runs["score_no_permutations"]["cpu_seconds"] / runs["read"]["cpu_seconds"],
        "trace_seconds": trace_seconds, "trace_cpu_seconds": trace_cpu, "trace_seconds_source": source,
        "score_over_trace": score["seconds"] / trace_seconds,
        "score_over_trace_cpu": score["cpu_seconds"] / trace_cpu,
        "kmeans": kmeans,
        "target_score_over_trace": 0.10,
        "peak_rss_mb_small_vs_full": [runs["score_small"]["peak_rss_mb"], score["peak_rss_mb"]],
        "peak_rss_ratio_full_over_small": score["peak_rss_mb"] / runs["score_small"]["peak_rss_mb"],
        "peak_rss_mb_no_permutations_small_vs_full": [runs["score_small_no_permutations"]["peak_rss_mb"],
                                                      runs["score_no_permutations"]["peak_rss_mb"]],
        "document_state_bytes": summary.get("document_state_bytes"),
        "skew": {k: summary["skew"][k] for k in ("specialised_total", "expected_under_null_total",
                                                 "significant_total", "permutations")},
    }
    write_result(args, results)
    print(f"moe-score {results['score_tokens_per_s']:.0f} tok/s, {results['score_over_read_cpu']:.2f}x the CPU time of "
          f"reading alone, {100 * results['score_over_trace_cpu']:.2f} % of tracing's CPU time ({source}); peak RSS "
          f"{runs['score_small']['peak_rss_mb']:.0f} MB at {small_tokens} tokens vs {score['peak_rss_mb']:.0f} MB at "
          f"{info['tokens']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
