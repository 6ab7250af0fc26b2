"""Benchmark moe-trace on an OLMoE-shaped model on CPU (8 layers, 32 experts, top-4, d=256).

Measured side by side in one run (ratios; the machine is shared and noisy):

- throughput: ``moe-trace`` (tokenize, traced forward, records, msgpack+zstd to a file)
  vs. a bare untraced forward over the same batches, both ``logits_to_keep=1`` (what
  moe-trace runs) and plain ``model(input_ids)`` (full logits); paired batch by batch,
  shuffled order, fastest of ``--repeats`` per batch (see :func:`throughput`);
- bytes on disk per token·layer·selected-expert of the written trace (default ``--values f2``);
- peak RSS of the ``moe-trace`` process at a small vs. a large corpus (separate processes).

    .venv/bin/python bench/bench_trace.py            # 20k vs 1M tokens (minutes)
    .venv/bin/python bench/bench_trace.py --quick    # 5k vs 100k tokens
    .venv/bin/python bench/bench_trace.py --write-trace /tmp/trace-1m.msgpack.zst [--tokens 1000000]

``--write-trace`` writes a trace of the synthetic domain corpus (JSON lines with
``domain`` metadata; text drawn from per-domain word distributions, so routing
differs by domain once a model is trained; here the model is random) for other
benchmarks (moe-sample) to reuse. Results: bench/results/trace.json.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _harness import measured_python, parser, write_result

DOMAINS = ("code", "legal", "medical", "math", "general")
WORDS_PER_DOMAIN = 800
SHARED_WORDS = 400
SHAPE = {"num_hidden_layers": 8, "num_experts": 32, "num_experts_per_tok": 4, "hidden_size": 256,
         "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 4,
         "max_position_embeddings": 4096}


def vocabulary() -> list[str]:
    words = [f"w{i}" for i in range(SHARED_WORDS)]
    for domain in DOMAINS:
        words += [f"{domain}{i}" for i in range(WORDS_PER_DOMAIN)]
    return words


def build_model(directory: Path) -> Path:
    """Save the OLMoE-shaped random model and a WordLevel tokenizer over :func:`vocabulary`."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    if (directory / "config.json").exists():
        return directory
    words = vocabulary()
    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]",
                                         pad_token="[PAD]").save_pretrained(directory)
    config = transformers.OlmoeConfig(vocab_size=len(vocab), pad_token_id=1, bos_token_id=None, eos_token_id=None,
                                      **SHAPE)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


def write_corpus(path: Path, tokens: int, seed: int = 0) -> int:
    """Synthetic JSON-lines corpus of about ``tokens`` tokens; documents of 50..1500 words."""
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, WORDS_PER_DOMAIN + 1)
    zipf /= zipf.sum()
    written = 0
    with open(path, "w") as handle:
        number = 0
        while written < tokens:
            domain = DOMAINS[number % len(DOMAINS)]
            length = int(min(tokens - written, rng.integers(50, 1500)))
            own = rng.choice(WORDS_PER_DOMAIN, size=length, p=zipf)
            shared = rng.integers(0, SHARED_WORDS, size=length)
            pick = rng.random(length) < 0.7
            words = [f"{domain}{o}" if p else f"w{s}" for o, s, p in zip(own, shared, pick)]
            handle.write(json.dumps({"id": f"{domain}-{number}", "text": " ".join(words), "domain": domain,
                                     "toxicity": round(float(rng.random()), 3)}) + "\n")
            written += length
            number += 1
    return written


def throughput(model_dir: Path, corpus: Path, work: Path, repeats: int, max_length: int,
               batch_tokens: int = 2048) -> dict:
    """moe-trace's per-batch work vs. bare forwards of the same batches, paired batch by batch.

    For each batch, the three variants run ``repeats`` times in shuffled order and each keeps
    its fastest time (the machine is shared: pairing per batch and taking minima cancels most
    of the other processes' noise). The traced variant is everything moe-trace does per batch:
    traced forward, records, msgpack+zstd into a file; moe-trace's tokenization of the corpus
    (timed once) is added to its total. One end-to-end ``trace_corpus`` run is reported too.
    """
    import random

    from moetools.models import load_model
    from moetools.streams import StreamWriter
    from moetools.trace import TraceOptions, trace_corpus
    from moetools.trace.corpus import batches, read_documents
    from moetools.trace.records import PieceTable, batch_records
    from moetools.trace.run import TRACE_ZSTD_LEVEL
    from moetools.trace.runner import TraceSummary, _forward, iter_windows, pad_batch

    model, tokenizer, adapter = load_model(str(model_dir))
    options = TraceOptions(max_length=max_length, batch_tokens=batch_tokens)
    start = time.perf_counter()
    with open(corpus, "rb") as source:  # the same windows and batches moe-trace forms
        windows = list(iter_windows(read_documents(source, name="c"), tokenizer, options, TraceSummary()))
    tokenize_seconds = time.perf_counter() - start
    batch_list = [(batch, *pad_batch(batch, max(len(w.token_ids) for w in batch), 1))
                  for batch in batches(windows, batch_tokens=batch_tokens, batch_size=None,
                                       sort_buffer=options.sort_buffer)]
    tokens = sum(len(w.token_ids) for w in windows)
    layers = adapter.moe_layers()
    pieces = PieceTable(tokenizer)
    output = work / "throughput.msgpack.zst"
    out = open(output, "wb")  # noqa: SIM115 - closed below
    writer = StreamWriter(out, "trace", model={"fingerprint": "bench"}, level=TRACE_ZSTD_LEVEL)
    capture = adapter.capture()

    def bare_keep1(batch, ids, mask):
        _forward(model, ids, mask)

    def bare_full_logits(batch, ids, mask):
        model(ids)  # the plain `model(input_ids)` of the brief (full logits)

    def trace(batch, ids, mask):
        with capture:
            _forward(model, ids, mask)
            captured = capture.take(mask)
        for record in batch_records(batch, captured, seq_len=ids.shape[1], num_experts=layers[0].num_experts,
                                    pieces=pieces):
            writer.write(record)

    variants = {"bare_keep1": bare_keep1, "bare_full_logits": bare_full_logits, "trace": trace}
    best = dict.fromkeys(variants, 0.0)
    shuffle = random.Random(0)
    with torch.inference_mode():
        bare_keep1(*batch_list[0])  # warm-up
        for batch, ids, mask in batch_list:
            fastest = dict.fromkeys(variants, float("inf"))
            for _ in range(repeats):
                for name in shuffle.sample(list(variants), len(variants)):
                    begin = time.perf_counter()
                    variants[name](batch, ids, mask)
                    fastest[name] = min(fastest[name], time.perf_counter() - begin)
            for name in variants:
                best[name] += fastest[name]
    writer.close()
    out.close()
    best["trace"] += tokenize_seconds
    start = time.perf_counter()
    end_to_end = work / "end_to_end.msgpack.zst"
    with open(corpus, "rb") as source, open(end_to_end, "wb") as handle, torch.inference_mode():
        stream = StreamWriter(handle, "trace", model={"fingerprint": "bench"}, level=TRACE_ZSTD_LEVEL)
        trace_corpus(model, tokenizer, adapter, read_documents(source, name="c"), stream, options)
        stream.close()
    end_to_end_seconds = time.perf_counter() - start
    size = end_to_end.stat().st_size
    return {
        "tokens": tokens, "windows": len(windows), "batches": len(batch_list), "batch_tokens": batch_tokens,
        "repeats": repeats, "seconds": best, "tokenize_seconds": tokenize_seconds,
        "end_to_end_trace_seconds": end_to_end_seconds,
        "tokens_per_s": {name: tokens / value for name, value in best.items()},
        "trace_overhead_vs_bare_keep1": best["trace"] / best["bare_keep1"] - 1,
        "trace_overhead_vs_bare_full_logits": best["trace"] / best["bare_full_logits"] - 1,
        "trace_bytes": size,
        "bytes_per_token_layer_expert": size / (tokens * len(layers) * layers[0].top_k),
    }


def peak_rss(model_dir: Path, corpus: Path, output: Path, max_length: int) -> dict:
    """Run the real CLI in a fresh process (bench/_harness.py): its own peak RSS (VmHWM), seconds, CPU seconds."""
    code = ("import sys; from moetools.cli.trace import command; "
            "command.main(args=sys.argv[1:], standalone_mode=False)")
    result = measured_python(["-c", code, str(model_dir), str(corpus), "-q", "--max-length", str(max_length), "-o",
                              str(output)], check=False)
    if result["returncode"] != 0:
        raise SystemExit(f"moe-trace failed: {result['stderr']}")
    return {"peak_rss_mb": result["peak_rss_mb"], "seconds": result["wall_s"], "cpu_seconds": result["cpu_s"],
            "bytes": output.stat().st_size}


def main() -> None:
    options = parser(__doc__, "trace")  # --quick: 5k vs 100k tokens instead of 20k vs 1M
    options.add_argument("--repeats", type=int, default=3)
    options.add_argument("--max-length", type=int, default=512)
    options.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    options.add_argument("--write-trace", metavar="PATH", help="only write a trace of --tokens tokens to PATH")
    options.add_argument("--tokens", type=int, default=1_000_000, help="corpus size for --write-trace")
    options.add_argument("--keep-large", metavar="PATH", help="keep the large run's trace at PATH (for moe-sample)")
    options.add_argument("--model-dir", help="where to keep the benchmark model (default: a temporary directory)")
    args = options.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    with tempfile.TemporaryDirectory(prefix="bench-trace-") as temporary:
        work = Path(temporary)
        model_dir = build_model(Path(args.model_dir) if args.model_dir else work / "model")
        if args.write_trace:
            corpus = work / "corpus.jsonl"
            tokens = write_corpus(corpus, args.tokens)
            report = peak_rss(model_dir, corpus, Path(args.write_trace), args.max_length)
            print(json.dumps({"trace": args.write_trace, "tokens": tokens, **report}))
            return
        small_tokens, large_tokens = (5_000, 100_000) if args.quick else (20_000, 1_000_000)
        small, large = work / "small.jsonl", work / "large.jsonl"
        # the small corpus is the first documents of the large one (same seed): same document
        # lengths, so the same batch shapes, and the peak is set by the largest padded batch
        # (bounded by --batch-tokens, 2048 on CPU by default), not by how much was read. At 8192
        # the batch's ~400 MB of transient tensors landed differently in glibc's heap from batch
        # to batch and the peak drifted up with the number of batches (1.18x at 1M tokens).
        write_corpus(small, small_tokens, seed=2)
        write_corpus(large, large_tokens, seed=2)
        speed = throughput(model_dir, small, work, args.repeats, args.max_length)
        rss_small = peak_rss(model_dir, small, work / "small.msgpack.zst", args.max_length)
        rss_large = peak_rss(model_dir, large, Path(args.keep_large) if args.keep_large else work / "large.msgpack.zst",
                             args.max_length)
    results = {
        "torch_threads": args.threads, "model": SHAPE,
        "throughput": speed,
        "peak_rss": {"small_tokens": small_tokens, "large_tokens": large_tokens, "small": rss_small,
                     "large": rss_large, "ratio_large_to_small": rss_large["peak_rss_mb"] / rss_small["peak_rss_mb"]},
        "bytes_per_token_layer_expert_large": rss_large["bytes"] / (large_tokens * SHAPE["num_hidden_layers"]
                                                                   * SHAPE["num_experts_per_tok"]),
    }
    write_result(args, results, quiet=True)
    t = speed
    print(f"moe-trace {t['tokens_per_s']['trace']:.0f} tok/s, bare forward {t['tokens_per_s']['bare_keep1']:.0f} tok/s "
          f"(overhead {100 * t['trace_overhead_vs_bare_keep1']:+.1f}%), bare model(input_ids) "
          f"{t['tokens_per_s']['bare_full_logits']:.0f} tok/s (overhead {100 * t['trace_overhead_vs_bare_full_logits']:+.1f}%)")
    print(f"bytes per token·layer·selected expert: {t['bytes_per_token_layer_expert']:.2f} (small), "
          f"{results['bytes_per_token_layer_expert_large']:.2f} (large)")
    print(f"peak RSS {rss_small['peak_rss_mb']:.0f} MB at {small_tokens} tokens vs {rss_large['peak_rss_mb']:.0f} MB at "
          f"{large_tokens} tokens (ratio {results['peak_rss']['ratio_large_to_small']:.3f})")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
