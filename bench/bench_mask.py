"""Benchmark moe-mask: masking time and peak RSS against the model's size on disk, and the
forward time of masked models against the unmasked one, measured side by side in one run.

The model is a random OLMoE (transformers' real modeling code) of ``--layers`` x ``--experts`` experts,
d=``--hidden``, saved as safetensors: no trained MoE larger than it is on this machine (the demo's
models are smaller). moe-mask runs as the real CLI in a fresh process (peak RSS = that process's
``VmHWM``, ``bench/_harness.py``), once for an equal-size mask (``pruned``) and once for an unequal one (``remote``).
Forward times: best of ``--repeats`` interleaved rounds on a (4, 256) batch, for the base, the pruned directory, the
remote directory and the base under the in-memory ``masked()`` context manager.

    .venv/bin/python bench/bench_mask.py            # writes bench/results/mask.json
    .venv/bin/python bench/bench_mask.py --quick    # 4 layers x 16 experts, d=128, 2 repeats
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from _harness import measure, measured_python, parser, write_result


def run_mask(source: Path, experts: Path, out: Path) -> dict:
    script = ("import sys, time; from moetools.cli.mask import main; t = time.perf_counter();\n"
              "try:\n    main(sys.argv[1:], standalone_mode=True)\nexcept SystemExit as e:\n"
              "    sys.stderr.write(f'WALL {time.perf_counter() - t}\\n'); raise")
    done = measured_python(["-c", script, str(source), "--experts", str(experts), "-o", str(out), "-q"])
    line = [x for x in done["stderr"].splitlines() if x.startswith("WALL")][-1].split()
    return {"process_seconds": round(done["wall_s"], 3), "mask_seconds": round(float(line[1]), 3),
            "cpu_seconds": done["cpu_s"], "peak_rss_mb": done["peak_rss_mb"]}


def runtime_baseline(source: Path) -> float:
    """Peak RSS (MB) of a process that imports what moe-mask imports and builds the model on the meta
    device, without touching a weight: the part of moe-mask's peak that does not depend on the weights."""
    script = "import sys; from moetools.mask.directory import _meta_model; _meta_model(sys.argv[1])"
    return measured_python(["-c", script, str(source)])["peak_rss_mb"]


def interleaved_forward(variants: dict, input_ids, repeats: int) -> dict:
    """Best-of-``repeats`` forward seconds per variant, the variants taking turns in every round (so
    that load from other processes on the machine hits them alike). A variant is (model, context)."""
    import contextlib

    import torch

    best = dict.fromkeys(variants, float("inf"))
    with torch.no_grad():
        for round_index in range(repeats + 1):  # round 0 warms up
            for name, (model, context) in variants.items():
                with context() if context else contextlib.nullcontext():
                    started = time.perf_counter()
                    model(input_ids)
                    elapsed = time.perf_counter() - started
                if round_index:
                    best[name] = min(best[name], elapsed)
    return best


def main() -> None:
    options = parser(__doc__, "mask")  # --quick: 4 layers x 16 experts, d=128, intermediate 256, 2 repeats
    options.add_argument("--layers", type=int, default=None, help="8 (--quick: 4)")
    options.add_argument("--experts", type=int, default=None, help="32 (--quick: 16)")
    options.add_argument("--hidden", type=int, default=None, help="256 (--quick: 128)")
    options.add_argument("--intermediate", type=int, default=None, help="512 (--quick: 256)")
    options.add_argument("--repeats", type=int, default=None, help="5 (--quick: 2)")
    args = options.parse_args()
    for name, full, quick in (("layers", 8, 4), ("experts", 32, 16), ("hidden", 256, 128),
                              ("intermediate", 512, 256), ("repeats", 5, 2)):
        setattr(args, name, getattr(args, name) or (quick if args.quick else full))

    import torch
    import transformers

    from moetools.mask import masked
    from moetools.models import load_model
    from moetools.testing.tiny_models import save_word_tokenizer

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        config = transformers.OlmoeConfig(vocab_size=4096, hidden_size=args.hidden, intermediate_size=args.intermediate,
                                          num_hidden_layers=args.layers, num_attention_heads=8, num_key_value_heads=8,
                                          num_experts=args.experts, num_experts_per_tok=4, max_position_embeddings=512,
                                          pad_token_id=1, bos_token_id=None, eos_token_id=None)
        torch.manual_seed(0)
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(root / "base")
        save_word_tokenizer(root / "base", [f"w{i}" for i in range(100)])
        disk = sum(p.stat().st_size for p in (root / "base").glob("*.safetensors"))
        quarter = args.experts // 4
        equal = {str(layer): list(range(layer % 4, args.experts, 4))[:quarter] for layer in range(args.layers)}
        unequal = {str(layer): list(range(1 + layer % quarter)) for layer in range(args.layers)}
        (root / "equal.json").write_text(json.dumps({"experts": equal}))
        (root / "unequal.json").write_text(json.dumps({"experts": unequal}))
        runs = {"pruned": run_mask(root / "base", root / "equal.json", root / "pruned"),
                "remote": run_mask(root / "base", root / "unequal.json", root / "remote")}
        for run in runs.values():
            run["peak_rss_over_weights"] = round(run["peak_rss_mb"] * 2**20 / disk, 3)

        baseline = runtime_baseline(root / "base")
        for run in runs.values():
            run["peak_rss_above_runtime_mb"] = round(run["peak_rss_mb"] - baseline, 1)
            run["above_runtime_over_weights"] = round((run["peak_rss_mb"] - baseline) * 2**20 / disk, 3)
        input_ids = torch.randint(2, 4096, (4, 256), generator=torch.Generator().manual_seed(0))
        base = load_model(root / "base", tokenizer=False).model
        mask = {int(k): v for k, v in equal.items()}
        variants = {"base": (base, None), "in_memory_masked": (base, lambda: masked(base, mask)),
                    "pruned_dir": (load_model(root / "pruned", tokenizer=False).model, None),
                    "remote_dir": (load_model(root / "remote", tokenizer=False, trust_remote_code=True).model, None)}
        with measure() as forward_cost:
            forward = interleaved_forward(variants, input_ids, args.repeats)
    result = {
        "model": {"family": "olmoe (random init)", "layers": args.layers, "experts": args.experts, "top_k": 4,
                  "hidden": args.hidden, "intermediate": args.intermediate, "weights_on_disk_mb": round(disk / 2**20, 1)},
        "masking": {f"pruned ({args.experts // 4} of {args.experts} experts per layer)": runs["pruned"],
                    f"remote (1..{args.experts // 4} experts per layer)": runs["remote"]},
        "forward_seconds_best_of": args.repeats, "batch": [4, 256],
        "forward_seconds": {k: round(v, 4) for k, v in forward.items()},
        "forward_ratio_vs_base": {k: round(v / forward["base"], 3) for k, v in forward.items() if k != "base"},
        "torch_threads": torch.get_num_threads(), "forward_rounds": forward_cost,
        "runtime_baseline_rss_mb": round(baseline, 1),
        "note": ("peak_rss_mb is the whole moe-mask process; runtime_baseline_rss_mb is the same imports and the "
                 "meta-device model without weights; pruned/bias stream tensors through safetensors (128 MB "
                 "shards), remote loads the model once. Forward times: variants interleaved per round."),
    }
    write_result(args, result, quiet=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
