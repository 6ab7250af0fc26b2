"""How much padded batching changes gates in reduced precision (man moe-trace, --batch-size).

The same corpus is traced through the library (:func:`moetools.trace.runner.trace_corpus`, the code
moe-trace runs) once with ``batch_size=1`` (no padding) and once with length-sorted padded batches
(the default ``batch_tokens``), side by side, per family and dtype. Reported per run pair:

- ``max_rel_gate_diff``: max over tokens and slots whose expert is the same in both runs of
  |g_batched − g_single| / |g_single| (gates stored at ``precision=24``, i.e. exact fp32 values);
- ``p999_rel_gate_diff``: the 99.9th percentile of the same;
- ``flipped_slots``: share of (layer, token, slot) whose selected expert differs.

Random weights, OLMoE- and DeepSeek-V3-shaped (real transformers modeling code). float32 is the
control: there padding changes only summation order, so differences are ~1e-6.

    .venv/bin/python bench/bench_bf16_batching.py        # writes bench/results/bf16_batching.json
    .venv/bin/python bench/bench_bf16_batching.py --quick   # 24 documents instead of 96
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _harness import measure, parser, write_result

WORDS = [f"w{i}" for i in range(500)]
COMMON = {"vocab_size": len(WORDS) + 2, "hidden_size": 256, "intermediate_size": 256, "num_hidden_layers": 4,
          "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 512,
          "pad_token_id": 1, "bos_token_id": None, "eos_token_id": None}


def family_config(family: str):
    import transformers

    if family == "olmoe":
        return transformers.OlmoeConfig(num_experts=32, num_experts_per_tok=4, **COMMON)
    return transformers.DeepseekV3Config(n_routed_experts=32, num_experts_per_tok=4, moe_intermediate_size=128,
                                         n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=64, n_group=4,
                                         topk_group=2, kv_lora_rank=64, qk_rope_head_dim=32, qk_nope_head_dim=32,
                                         v_head_dim=32, **COMMON)


def save_model(family: str, directory: Path) -> Path:
    """A random model of ``family`` saved in bfloat16 (so ``--dtype auto`` loads bf16) with a word tokenizer."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(family_config(family))
    with torch.no_grad():  # a trained router's correction bias is not zero; make its path matter
        for name, tensor in model.named_buffers():
            if "e_score_correction_bias" in name:
                tensor.copy_(torch.randn_like(tensor) * 0.1)
    model.to(torch.bfloat16).save_pretrained(directory)
    vocab = {"[UNK]": 0, "[PAD]": 1, **{word: index + 2 for index, word in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]",
                                         pad_token="[PAD]").save_pretrained(directory)
    return directory


def write_corpus(path: Path, documents: int = 96) -> Path:
    rng = np.random.default_rng(0)
    with open(path, "w") as handle:
        for number in range(documents):
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(8, 200))))
            handle.write(json.dumps({"id": f"d{number}", "text": text}) + "\n")
    return path


class Collect:
    """The two methods trace_corpus calls on a StreamWriter; records kept by (doc_id, window)."""

    def __init__(self):
        self.records = {}

    def write(self, record):
        self.records[(record["doc_id"], record["window"])] = record

    def flush(self):
        pass


def trace(loaded, corpus: Path, batch_size):
    from moetools.corpus.documents import read_corpus
    from moetools.trace.runner import TraceOptions, trace_corpus

    sink = Collect()
    options = TraceOptions(max_length=256, batch_size=batch_size, precision=24)
    started = time.perf_counter()
    trace_corpus(loaded.model, loaded.tokenizer, loaded.adapter, read_corpus(str(corpus)), sink, options)
    return sink.records, time.perf_counter() - started


def compare(single: dict, batched: dict) -> dict:
    relative, flipped, slots = [], 0, 0
    for key, one in single.items():
        other = batched[key]
        same = one["experts"] == other["experts"]  # (L, T, K)
        flipped += int((~same).sum())
        slots += same.size
        g1, g2 = one["gates"].astype(np.float64), other["gates"].astype(np.float64)
        relative.append((np.abs(g2 - g1) / np.maximum(np.abs(g1), 1e-30))[same])
    relative = np.concatenate(relative)
    return {"max_rel_gate_diff": float(relative.max()), "p999_rel_gate_diff": float(np.quantile(relative, 0.999)),
            "flipped_slots": flipped / slots, "slots": slots}


def main() -> int:
    options = parser(__doc__, "bf16_batching")  # --quick: 24 documents instead of 96
    options.add_argument("--documents", type=int, default=None, help="corpus documents (96; --quick: 24)")
    args = options.parse_args()
    documents = args.documents or (24 if args.quick else 96)

    import torch

    from moetools.models import load_model

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    results = {"what": __doc__.strip().splitlines()[0], "documents": documents, "runs": []}
    with measure() as cost, tempfile.TemporaryDirectory() as work:
        work = Path(work)
        corpus = write_corpus(work / "corpus.jsonl", documents)
        for family in ("olmoe", "deepseek_v3"):
            directory = save_model(family, work / family)
            for dtype in ("auto", "float32"):
                loaded = load_model(directory, dtype=dtype)
                single, seconds_single = trace(loaded, corpus, 1)
                batched, seconds_batched = trace(loaded, corpus, None)
                row = {"family": family, "dtype": str(loaded.model.dtype).removeprefix("torch."),
                       "windows": len(single), **compare(single, batched),
                       "seconds_batch_size_1": round(seconds_single, 2),
                       "seconds_padded_batches": round(seconds_batched, 2)}
                print(json.dumps(row), flush=True)
                results["runs"].append(row)
    results["whole_run"] = cost
    write_result(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
