"""Benchmark moe-mask on a checkpoint as models are published: >= 2 GB, bf16, sharded over ~5 files with
an index. Peak RSS of moe-mask against the checkpoint's size, and its time against copying the files.

The checkpoint is OLMoE-1B-7B-0924's published config (routing keys as published: 64 experts, top-8,
``norm_topk_prob`` false) at other sizes: ``--layers`` x 64 experts, d=``--hidden``, ``--intermediate``
per expert, random bf16 weights (transformers' real modeling code), saved with save_pretrained
over ``--shards`` files. moe-mask runs as the real CLI in a fresh process (peak RSS = that process's
``VmHWM``, bench/_harness.py): ``pruned`` (16 of 64 experts masked in every layer: written tensor by
tensor) and ``remote`` (unequal sets: OLMoE has no router bias to put -inf in, so the other mode for
unequal sets is ``remote``, which loads the model once; ``bias`` mode writes through the same tensor
by tensor writer as ``pruned``). ``cp -r`` of the directory is the time baseline, run before, between
and after the masks (the fastest kept; pruned runs twice, the faster kept; every timing starts after
``sync``). Everything lives in a temporary directory, removed at the end.

    .venv/bin/python bench/bench_mask_sharded.py            # ~2.5 GB; writes bench/results/mask_sharded.json
    .venv/bin/python bench/bench_mask_sharded.py --quick    # 2 layers, d=256: the same measurements, ~30 MB
    # OLMoE-1B-7B-0924 at its published size (13.8 GB; remote mode would need 2x that in memory):
    .venv/bin/python bench/bench_mask_sharded.py --layers 16 --hidden 2048 --intermediate 1024 --vocab 50304 \
        --shards 3 --modes pruned -o bench/results/mask_sharded_published_size.json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _harness import measured_python, parser, write_result
from bench_mask import run_mask

#: allenai/OLMoE-1B-7B-0924 config.json: the keys kept (tests/published_shapes.py cites the same)
PUBLISHED_OLMOE = {"hidden_act": "silu", "num_experts": 64, "num_experts_per_tok": 8, "norm_topk_prob": False,
                   "router_aux_loss_coef": 0.01, "clip_qkv": None, "rope_theta": 10000.0, "rms_norm_eps": 1e-05,
                   "attention_bias": False, "tie_word_embeddings": False, "max_position_embeddings": 4096}

BUILD = """
import json, sys, torch, transformers
from moetools.testing.tiny_models import save_word_tokenizer
values, out, shards = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
config = transformers.OlmoeConfig(**values)
torch.manual_seed(0)
model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
model.save_pretrained(out, max_shard_size=size // shards + (1 << 20))
save_word_tokenizer(out, [f"w{i}" for i in range(100)])
"""


def settle() -> None:
    """Write back every dirty page before a timing: the previous run's output must not slow the next
    one down through the kernel's writeback throttling (cp and moe-mask measured alike)."""
    os.sync()


def copy_seconds(source: Path, target: Path) -> float:
    settle()
    started = time.perf_counter()
    subprocess.run(["cp", "-r", str(source), str(target)], check=True)
    elapsed = time.perf_counter() - started
    shutil.rmtree(target)
    return elapsed


def main() -> None:
    options = parser(__doc__, "mask_sharded")
    options.add_argument("--layers", type=int, default=None, help="12 (--quick: 2)")
    options.add_argument("--hidden", type=int, default=None, help="1024 (--quick: 256)")
    options.add_argument("--intermediate", type=int, default=None, help="512 (--quick: 64)")
    options.add_argument("--vocab", type=int, default=8192)
    options.add_argument("--shards", type=int, default=5)
    options.add_argument("--modes", default="pruned,remote",
                         help="pruned,remote; remote loads the whole model (2x the checkpoint in memory)")
    args = options.parse_args()
    for name, full, quick in (("layers", 12, 2), ("hidden", 1024, 256), ("intermediate", 512, 64)):
        setattr(args, name, getattr(args, name) or (quick if args.quick else full))
    values = {**PUBLISHED_OLMOE, "vocab_size": args.vocab, "hidden_size": args.hidden, "intermediate_size": args.intermediate,
              "num_hidden_layers": args.layers, "num_attention_heads": 16, "num_key_value_heads": 16,
              "pad_token_id": 1, "bos_token_id": None, "eos_token_id": None}
    free = shutil.disk_usage(tempfile.gettempdir()).free
    with tempfile.TemporaryDirectory(prefix="bench-mask-sharded-") as scratch:
        root = Path(scratch)
        built = measured_python(["-c", BUILD, json.dumps(values), str(root / "base"), str(args.shards)])
        files = sorted((root / "base").glob("*.safetensors"))
        disk = sum(path.stat().st_size for path in files)
        if free < 4 * disk:
            raise SystemExit(f"bench_mask_sharded: {free / 2**30:.1f} GB free in {scratch}, need {4 * disk / 2**30:.1f}")
        experts = values["num_experts"]
        equal = {str(layer): list(range(layer % 4, experts, 4)) for layer in range(args.layers)}  # 16 masked
        unequal = {str(layer): list(range(16 + layer % 8)) for layer in range(args.layers)}
        (root / "equal.json").write_text(json.dumps({"experts": equal}))
        (root / "unequal.json").write_text(json.dumps({"experts": unequal}))
        copies = [copy_seconds(root / "base", root / "copy")]
        runs = {}
        modes = [mode for mode in (("pruned", "equal.json"), ("remote", "unequal.json"))
                 if mode[0] in args.modes.split(",")]
        for mode, chosen in modes:
            settle()
            runs[mode] = run_mask(root / "base", root / chosen, root / mode)
            if mode == "pruned":  # a second round, after another copy: the faster of each kept
                copies.append(copy_seconds(root / "base", root / "copy"))
                shutil.rmtree(root / mode)
                settle()
                again = run_mask(root / "base", root / chosen, root / mode)
                runs[mode] = min(runs[mode], again, key=lambda run: run["mask_seconds"])
            written = sorted((root / mode).glob("*.safetensors"))
            runs[mode].update(files_written=len(written),
                              written_mb=round(sum(p.stat().st_size for p in written) / 2**20, 1))
            shutil.rmtree(root / mode)
        copies.append(copy_seconds(root / "base", root / "copy"))
        # the part of moe-mask that does not depend on the weights' size: imports, the model on the meta
        # device (as bench_mask.runtime_baseline), timed too
        meta_only = "import sys; from moetools.mask.directory import _meta_model; _meta_model(sys.argv[1])"
        fixed = measured_python(["-c", meta_only, str(root / "base")])
        baseline = fixed["peak_rss_mb"]
    copy = min(copies)
    bound = 0.25 * disk / 2**20
    for run in runs.values():
        run.update(peak_rss_over_checkpoint=round(run["peak_rss_mb"] * 2**20 / disk, 3),
                   above_runtime_over_checkpoint=round((run["peak_rss_mb"] - baseline) * 2**20 / disk, 3),
                   mask_over_copy=round(run["mask_seconds"] / copy, 3),
                   process_over_copy=round(run["process_seconds"] / copy, 3),
                   beyond_fixed_over_copy=round((run["process_seconds"] - fixed["wall_s"]) / copy, 3),
                   peak_rss_within_quarter=run["peak_rss_mb"] <= bound,
                   mask_within_1_5x_copy=run["mask_seconds"] <= 1.5 * copy)
    result = {
        "checkpoint": {"config": "allenai/OLMoE-1B-7B-0924 routing keys, sizes scaled", "dtype": "bfloat16",
                       "layers": args.layers, "experts": experts, "top_k": values["num_experts_per_tok"],
                       "hidden": args.hidden, "intermediate": args.intermediate, "vocab": values["vocab_size"],
                       "files": len(files), "size_mb": round(disk / 2**20, 1),
                       "build_seconds": round(built["wall_s"], 1)},
        "copy_seconds": [round(c, 3) for c in copies], "quarter_of_checkpoint_mb": round(bound, 1),
        "runtime_baseline_rss_mb": round(baseline, 1), "runtime_baseline_seconds": round(fixed["wall_s"], 2),
        "masking": {title: runs[mode] for mode, title in
                    (("pruned", "pruned (16 of 64 experts masked per layer)"),
                     ("remote", "remote (16..23 of 64 experts masked per layer)")) if mode in runs},
        "note": ("peak_rss_mb is the whole moe-mask process (VmHWM); runtime_baseline_rss_mb is the same imports "
                 "and the model on the meta device without weights "
                 "(runtime_baseline_seconds: that process's wall time, mostly importing transformers' modeling code; "
                 "beyond_fixed_over_copy = (process_seconds - it) / copy). mask_seconds: the CLI's main() in the child; "
                 "process_seconds adds the interpreter and imports. copy: cp -r of the directory, files in the "
                 "page cache as for moe-mask. pruned (and bias) write tensor by tensor, one output file per "
                 "source file; remote loads the model once (its peak is the model's size, by design)."),
    }
    write_result(args, result, quiet=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
