"""Benchmark moe-sample against the moe-trace run that produced its input.

On a trace of ~1M tokens from the OLMoE-shaped benchmark model (8 MoE layers, 32
experts, top-4, d=256; ``bench/bench_trace.py``), measured in one run:

- ``moe-sample`` wall time (the real CLI in a fresh process, default options,
  best of ``--repeats``) as a fraction of the wall time of the ``moe-trace`` CLI
  process that wrote the trace (target < 5 %);
- peak RSS (``VmHWM`` of the moe-sample process, ``bench/_harness.py``) on the first ~100k tokens of
  that trace vs. the whole ~1M-token trace (target: within 10 %).

The trace comes from ``bench/bench_trace.py --write-trace`` (the real moe-trace CLI
over its synthetic domain corpus). If that script is missing or fails, a synthetic
trace of the same shape is written instead and the trace time is replaced by the
time of a bare forward pass of the same OLMoE config over the same number of
tokens (measured on a slice and scaled linearly); the JSON says which
(``trace_source``). ``--trace-cache DIR`` keeps the trace and the seconds its
moe-trace run took, so a rerun skips the (slow, CPU-only) tracing and says so
(``trace_reused``).

    .venv/bin/python bench/bench_sample.py            # 1M tokens (tracing takes ~15 min on 2 cores)
    .venv/bin/python bench/bench_sample.py --quick    # 100k tokens, 10k for the small RSS run
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _harness import measured_python, parser, write_result

SHAPE = {"num_hidden_layers": 8, "num_experts": 32, "num_experts_per_tok": 4, "hidden_size": 256,
         "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 4,
         "max_position_embeddings": 4096}
MAX_LENGTH = 512


def _measured(args: list[str], module: str, env: dict | None = None) -> dict:
    """Run ``moetools.cli.<module>`` in a fresh process (bench/_harness.py): seconds, CPU seconds, peak RSS."""
    code = (f"import sys; from moetools.cli.{module} import command; "
            "command.main(args=sys.argv[1:], standalone_mode=False)")
    try:
        report = measured_python(["-c", code, *args], env=env)
    except RuntimeError as error:
        raise RuntimeError(f"moetools.cli.{module} failed: {error}") from None
    return {"peak_rss_mb": report["peak_rss_mb"], "cpu_seconds": report["cpu_s"], "seconds": report["wall_s"]}


def run_trace(path: Path, tokens: int, model_dir: Path) -> dict:
    """The real moe-trace CLI on bench_trace.py's OLMoE-shaped model and synthetic domain corpus."""
    try:
        import bench_trace
    except Exception as error:  # noqa: BLE001 - any failure means: use the fallback
        raise RuntimeError(f"bench/bench_trace.py cannot be used ({type(error).__name__}: {error})") from None
    bench_trace.build_model(model_dir)
    corpus = path.with_suffix(".corpus.jsonl")
    written = bench_trace.write_corpus(corpus, tokens)
    # one torch thread, as bench_trace.py measures it: the machine is shared
    report = _measured([str(model_dir), str(corpus), "-q", "--max-length", str(MAX_LENGTH), "-o", str(path)],
                       "trace", env={"OMP_NUM_THREADS": "1"})
    corpus.unlink()
    return {"tokens": written, "seconds": report["seconds"], "cpu_seconds": report["cpu_seconds"],
            "peak_rss_mb": report["peak_rss_mb"], "source": "moe-trace CLI on bench_trace.py's model and corpus"}


def synthetic_trace(path: Path, tokens: int) -> dict:
    """Fallback: a trace of the benchmark shape with random routing, and a bare-forward time proxy."""
    import torch
    import transformers

    from moetools.streams import StreamWriter

    layers, experts, top_k = SHAPE["num_hidden_layers"], SHAPE["num_experts"], SHAPE["num_experts_per_tok"]
    rng = np.random.default_rng(0)
    header = {"layers": list(range(layers)), "num_experts": experts, "top_k": top_k, "max_length": MAX_LENGTH}
    with open(path, "wb") as out:
        writer = StreamWriter(out, "trace", model={"name": "synthetic", "fingerprint": "synthetic"},
                              header_extra=header)
        written, number = 0, 0
        while written < tokens:
            length = int(min(tokens - written, rng.integers(50, 1500)))
            for start in range(0, length, MAX_LENGTH):
                count = min(MAX_LENGTH, length - start)
                ids = rng.integers(0, 4000, size=count).astype("<i4")
                choice = np.argsort(rng.random((layers, count, experts)), axis=-1)[..., :top_k].astype("|u1")
                gates = rng.dirichlet(np.ones(top_k), size=(layers, count)).astype("<f2")
                writer.write({"type": "sequence", "doc_id": f"d{number}", "window": start // MAX_LENGTH,
                              "offset": start, "meta": {"domain": "general"}, "tokens": ids,
                              "pieces": [f" w{int(t)}" for t in ids], "experts": choice, "gates": gates,
                              "contribution": (gates * np.float16(2.0)).astype("<f2"),
                              "prob_sum": np.full((layers, experts), count / experts, dtype="<f4")})
            written += length
            number += 1
        writer.close()
    config = transformers.OlmoeConfig(vocab_size=4400, pad_token_id=1, bos_token_id=None, eos_token_id=None,
                                      **SHAPE)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    torch.set_num_threads(1)  # as moe-trace is measured: one torch thread on a shared machine
    batch = torch.randint(0, 4400, (16, MAX_LENGTH))
    measured = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        while measured < min(tokens, 100_000):
            model(input_ids=batch, use_cache=False, logits_to_keep=1)
            measured += batch.numel()
    seconds = (time.perf_counter() - start) * tokens / measured
    cpu_seconds = (time.process_time() - cpu_start) * tokens / measured
    return {"tokens": written, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "source": f"synthetic trace; time = bare forward of the OLMoE config over {measured} tokens, "
                      f"scaled to {written} (a proxy: moe-trace itself was not available)"}


def head_tokens(source: Path, target: Path, tokens: int) -> int:
    """Copy the first records of ``source`` holding >= ``tokens`` tokens into a complete trace at ``target``."""
    from moetools.streams import StreamReader, StreamWriter

    with open(source, "rb") as handle, open(target, "wb") as out:
        reader = StreamReader(handle, kinds="trace")
        writer = StreamWriter(out, "trace", header=reader.header)
        copied = 0
        for record in reader:
            writer.write(record)
            copied += len(record["tokens"])
            if copied >= tokens:
                break
        writer.close()
    return copied


def run_sample(trace: Path, output: Path) -> dict:
    """moe-sample (the CLI, default options) in a fresh process."""
    report = _measured([str(trace), "-q", "--force", "-o", str(output)], "sample")
    report["output_bytes"] = output.stat().st_size
    return report


def get_trace(cache: Path, tokens: int, work: Path) -> tuple[Path, dict]:
    trace, meta = cache / f"trace-{tokens}.msgpack.zst", cache / f"trace-{tokens}.json"
    if trace.exists() and meta.exists():
        return trace, {**json.loads(meta.read_text()), "trace_reused": True}
    cache.mkdir(parents=True, exist_ok=True)
    try:
        info = run_trace(trace, tokens, cache / "model")
    except RuntimeError as error:
        print(f"bench_sample: {error}; falling back to a synthetic trace", file=sys.stderr)
        info = synthetic_trace(trace, tokens)
    meta.write_text(json.dumps(info) + "\n")
    return trace, {**info, "trace_reused": False}


def main() -> None:
    options = parser(__doc__, "sample")  # --quick: 100k tokens (10k for the small RSS run)
    options.add_argument("--repeats", type=int, default=2, help="moe-sample runs on the large trace (best of)")
    options.add_argument("--trace-cache", help="directory keeping the trace and its moe-trace seconds between runs")
    args = options.parse_args()
    large_tokens, small_tokens = (100_000, 10_000) if args.quick else (1_000_000, 100_000)

    with tempfile.TemporaryDirectory(prefix="bench-sample-") as temporary:
        work = Path(temporary)
        cache = Path(args.trace_cache) if args.trace_cache else work / "cache"
        trace, trace_info = get_trace(cache, large_tokens, work)
        small = work / "small.msgpack.zst"
        small_copied = head_tokens(trace, small, small_tokens)
        runs = []
        for _ in range(max(1, args.repeats)):  # alternate small and large so both see the same machine load
            rss_small = run_sample(small, work / "small.samples")
            runs.append(run_sample(trace, work / "large.samples"))
        best = min(runs, key=lambda run: run["seconds"])
    ratio = best["seconds"] / trace_info["seconds"]
    cpu_ratio = best["cpu_seconds"] / trace_info["cpu_seconds"] if trace_info.get("cpu_seconds") else None
    rss_ratio = max(run["peak_rss_mb"] for run in runs) / rss_small["peak_rss_mb"]
    results = {
        "trace": {"tokens": trace_info["tokens"], "seconds": trace_info["seconds"],
                  "cpu_seconds": trace_info.get("cpu_seconds"), "source": trace_info["source"],
                  "reused_from_cache": trace_info["trace_reused"], "model": SHAPE, "max_length": MAX_LENGTH},
        "sample": {"runs": runs, "best_seconds": best["seconds"],
                   "tokens_per_s": trace_info["tokens"] / best["seconds"]},
        "sample_over_trace_wall": ratio,
        "sample_over_trace_cpu": cpu_ratio,
        "target_sample_over_trace": 0.05,
        "peak_rss": {"small_tokens": small_copied, "large_tokens": trace_info["tokens"],
                     "small_mb": rss_small["peak_rss_mb"], "large_mb": max(run["peak_rss_mb"] for run in runs),
                     "ratio_large_to_small": rss_ratio, "target_ratio": 1.10},
    }
    write_result(args, results, quiet=True)
    print(f"trace: {trace_info['tokens']} tokens, {trace_info['seconds']:.1f} s ({trace_info['source']}"
          f"{', reused' if trace_info['trace_reused'] else ''})")
    print(f"moe-sample: {best['seconds']:.2f} s = {100 * ratio:.2f}% of the trace wall time (target < 5%)"
          + (f"; CPU {best['cpu_seconds']:.2f} s = {100 * cpu_ratio:.2f}% of the trace's CPU time" if cpu_ratio else ""))
    print(f"peak RSS: {rss_small['peak_rss_mb']:.0f} MB at {small_copied} tokens vs "
          f"{results['peak_rss']['large_mb']:.0f} MB at {trace_info['tokens']} tokens (ratio {rss_ratio:.3f}, "
          "target <= 1.10)")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
