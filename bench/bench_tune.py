"""Benchmark: moe-tune's modes side by side on one MoE with 64 experts per layer, 16 selected (paper 000 A.5).

Model: a random OLMoE (transformers' real modeling code), d=256, expert intermediate 512, 4 layers,
64 experts top-8 (101M expert parameters, 404 MB in fp32), vocabulary 512 (``--quick``: d=128,
I=256, 2 layers). Data: 64 random-word documents, batch 4 x 64 tokens: weights, gradients and
optimizer state dominate, as in the paper's setting (a 16B model), not activations. Each mode runs in its own child process (``--one MODE``) through
``moetools.tune.loop.Tuner``, so its peak RSS is its own:

* ``full``, ``experts`` (16 of 64 experts in every layer), ``attention-router``, ``lora`` (peft,
  r=16, alpha=32, attention + expert projections), ``lora-experts`` (the same 16 experts).

Figures per mode: trainable parameters, optimizer state bytes (AdamW ``exp_avg`` + ``exp_avg_sq``),
step time (median of the steps after the first), and the memory to train: the process's peak RSS
(``VmHWM``, ``bench/_harness.py``) is reset once the model is loaded, so imports and the transient of
``from_pretrained`` do not count; ``train_peak_mb`` = the model's weights + (peak RSS during the
run - RSS after loading): weights, gradients, optimizer state, activations (the ratios use it).
Ratios experts/full and lora-experts/lora come from the same run.

    .venv/bin/python bench/bench_tune.py            # -> bench/results/tune.json
    .venv/bin/python bench/bench_tune.py --quick    # d=128, I=256, 2 layers
"""

from __future__ import annotations

import itertools
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

from _harness import measured_python, parser, peak_rss_mb, reset_peak_rss, rss_mb, write_result

MODES = ("full", "experts", "attention-router", "lora", "lora-experts")
EXPERTS, SELECTED = 64, 16


def build(directory: Path, layers: int, hidden: int, intermediate: int) -> None:
    import torch
    import transformers

    from moetools.testing.tiny_models import save_word_tokenizer

    words = [f"w{i}" for i in range(500)]
    config = transformers.OlmoeConfig(vocab_size=512, hidden_size=hidden, intermediate_size=intermediate,
                                      num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                                      num_experts=EXPERTS, num_experts_per_tok=8, pad_token_id=1, bos_token_id=None,
                                      eos_token_id=None)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory / "model")
    save_word_tokenizer(directory / "model", words)
    rng = random.Random(0)
    with open(directory / "data.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"text": " ".join(rng.choice(words) for _ in range(300))}) + "\n" for _ in range(64))
    chosen = {str(layer): sorted(rng.sample(range(EXPERTS), SELECTED)) for layer in range(layers)}
    (directory / "experts.json").write_text(json.dumps({"experts": chosen}))


def one(mode: str, directory: Path, steps: int) -> dict:
    """Run one mode in this process; return its figures (stdout of the child)."""
    import torch

    torch.set_num_threads(1)
    from moetools.tune.loop import TuneOptions, Tuner

    baseline = rss_mb()
    options = TuneOptions(model=str(directory / "model"), data=str(directory / "data.jsonl"),
                          output=str(directory / f"out-{mode}"), mode=mode, experts=str(directory / "experts.json"),
                          steps=steps, batch_size=4, seq_len=64, lr=1e-4, eval_every=10_000,
                          checkpoint_every=10_000)
    tuner = Tuner(options)
    loaded = rss_mb()
    reset_peak_rss()  # from here on the peak is the training's
    summary = tuner.run()
    records = [json.loads(line) for line in (directory / f"out-{mode}" / "tune_log.jsonl").read_text().splitlines()]
    times = [r["elapsed_s"] for r in records if r["type"] == "train"]
    step_times = [b - a for a, b in itertools.pairwise(times)]
    state = tuner.optimizer.state_dict()["state"]
    optimizer_bytes = sum(t.numel() * t.element_size() for values in state.values() for t in values.values()
                          if isinstance(t, torch.Tensor) and t.ndim > 0)
    total = sum(p.numel() for p in tuner.model.parameters())
    weights = sum(p.numel() * p.element_size() for n, p in tuner.model.named_parameters() if "lora_" not in n)
    return {"mode": mode, "trainable_parameters": summary["trainable_parameters"], "model_parameters": total,
            "optimizer_state_bytes": optimizer_bytes, "step_s_median": statistics.median(step_times),
            "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": round(baseline, 1),
            "rss_after_load_mb": round(loaded, 1),
            "weights_mb": round(weights / 2**20, 1),
            "train_peak_mb": round(weights / 2**20 + peak_rss_mb() - loaded, 1),
            "adapter_bytes": sum(f.stat().st_size for f in (directory / f"out-{mode}").glob("*.safetensors"))}


def main() -> None:
    options = parser(__doc__, "tune")
    options.add_argument("--steps", type=int, default=6)
    options.add_argument("--one")
    options.add_argument("--dir")
    args = options.parse_args()
    if args.one:
        print(json.dumps(one(args.one, Path(args.dir), args.steps)))
        return
    layers, hidden, intermediate = (2, 128, 256) if args.quick else (4, 256, 512)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        build(directory, layers, hidden, intermediate)
        results = {}
        for mode in MODES:
            done = measured_python([__file__, "--one", mode, "--dir", str(directory), "--steps", str(args.steps)],
                                   env={"OMP_NUM_THREADS": "1"})
            results[mode] = {**json.loads(done["stdout"].strip().splitlines()[-1]),
                             "process": {key: done[key] for key in ("wall_s", "cpu_s", "peak_rss_mb")}}
            print(mode, results[mode], file=sys.stderr)
    full, experts, lora, lora_experts = (results[m] for m in ("full", "experts", "lora", "lora-experts"))
    report = {
        "bench": "tune",
        "model": {"family": "olmoe", "layers": layers, "hidden_size": hidden, "expert_intermediate": intermediate,
                  "experts": EXPERTS, "top_k": 8, "selected_per_layer": SELECTED, "vocab": 512},
        "batch": {"sequences": 4, "seq_len": 64, "steps": args.steps, "threads": 1},
        "device": "cpu",
        "modes": results,
        "ratios": {
            "experts_over_full_train_peak": round(experts["train_peak_mb"] / full["train_peak_mb"], 3),
            "experts_over_full_step_time": round(experts["step_s_median"] / full["step_s_median"], 3),
            "experts_over_full_optimizer_bytes": round(experts["optimizer_state_bytes"] / full["optimizer_state_bytes"], 4),
            "experts_over_full_trainable": round(experts["trainable_parameters"] / full["trainable_parameters"], 4),
            "lora_experts_over_lora_trainable": round(lora_experts["trainable_parameters"] / lora["trainable_parameters"], 4),
            "lora_experts_over_lora_train_peak": round(lora_experts["train_peak_mb"] / lora["train_peak_mb"], 3),
        },
        "note": "train_peak_mb = weights + peak RSS during training (reset after loading) - RSS after loading: "
                "weights, gradients, optimizer state, activations; each mode in its own process; CPU, one thread, on a "
                "shared 2-core machine (step times are noisy).",
    }
    write_result(args, report, quiet=True)
    print(json.dumps(report["ratios"], indent=1))


if __name__ == "__main__":
    main()
