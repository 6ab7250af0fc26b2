"""Benchmark: MONET's efficient expert forms against a dense LLaMA and a naive MONET.

Model: d=256, 4 layers, 4 attention heads, 4 routing heads, moe_dim=8, moe_topk = moe_experts/16,
batch 4 x 128 tokens (``--quick``: 2 x 64). Compared side by side in one run, each in its own
child process (so peak RSS, ``VmHWM`` as ``bench/_harness.py`` reads it, is that variant's alone):

* ``monet-vd``, ``monet-hd``: the reorganised forms (Algorithms 1-2), for moe_experts in {16, 64, 256}
* ``llama``: transformers LlamaForCausalLM with the matched MLP (moetools.train.models)
* ``naive``: MONET-VD that composes the N = moe_experts**2 experts explicitly (gathers U_ij, V_ij
  for every (i, j), then sum_ij g_ij E_ij(x)), for moe_experts in {16, 64} (256 needs > 10 GB)

Figures: forward+backward step time (fastest of ``--rounds`` steps, the variants of one size taking
turns in one process so that they share the machine's noise; naive only at moe_experts=16, at 64
its single step in the memory child is reported as ``step_s_separate_process``), peak RSS growth during the steps, and
the bytes of tensors autograd saves for backward (exact, noise-free activation memory).
``--data FILE.jsonl --minutes M`` also trains MONET-VD with monet-train for M minutes and
reports its eval-loss curve against the unigram entropy of the same data (bits/token).

    .venv/bin/python bench/bench_monet.py --quick
    .venv/bin/python bench/bench_monet.py --data corpus.jsonl --minutes 10
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time

from _harness import measured_python, parser, peak_rss_mb, read_result, reset_peak_rss, rss_mb, write_result

SHAPE = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "moe_heads": 4, "moe_dim": 8,
         "moe_groups": 4}


class NaiveVerticalExperts:
    """Forward of a MonetVerticalExperts layer composing every E_ij explicitly (O(N) memory)."""

    def __init__(self, moe):
        self.moe = moe

    def __call__(self, x, g1, g2):
        import torch

        moe, experts, m = self.moe, self.moe.experts, self.moe.half_dim
        i = torch.arange(experts).repeat_interleave(experts)       # (N,) bottom index of composed expert
        j = torch.arange(experts).repeat(experts)                  # (N,)
        u1, u2 = moe.u1.weight.view(experts, m, -1), moe.u2.weight.view(experts, m, -1)
        U = torch.cat((u1[i], u2[j]), dim=1)                        # (N, M, D)
        hidden_bias = torch.cat((moe.u1.bias.view(experts, m)[i], moe.u2.bias.view(experts, m)[j]), 1)  # (N, M)

        def block(linear, index):
            return linear.weight.view(-1, experts, m)[:, index]     # (D/2, N, M/2)

        V = torch.cat((torch.cat((block(moe.v11, i), block(moe.v12, i)), 2),
                       torch.cat((block(moe.v21, j), block(moe.v22, j)), 2)), 0)   # (D, N, M)
        out_bias = torch.cat((moe.b1[i], moe.b2[j]), 1)             # (N, D)
        gates = torch.einsum("bthi,bthj->btij", g1, g2).flatten(-2)  # (B, T, N)
        hidden = moe.act_fn(torch.einsum("nmd,btd->btnm", U, x) + hidden_bias)      # (B, T, N, M)
        return torch.einsum("dnm,btnm->btd", V, hidden * gates[..., None]) + gates @ out_bias


def make_model(variant: str, experts: int):
    import torch

    from moetools.train.models import build_model, resolve_model_config

    torch.manual_seed(0)

    settings = {**SHAPE, "moe_experts": experts, "moe_topk": max(1, experts // 16)}
    special = {"eos_token_id": 0, "bos_token_id": 0, "pad_token_id": 1}
    arch = {"naive": "monet-vd"}.get(variant, variant)
    model = build_model(arch, resolve_model_config(arch, settings, 4096, special))
    if variant == "naive":
        for layer in model.model.layers:
            naive = NaiveVerticalExperts(layer.moe)
            layer.moe.forward = naive.__call__
    return model.train()


def time_interleaved(variants, experts: int, batch: int, length: int, rounds: int, threads: int) -> dict:
    """Fastest forward+backward step per variant, the variants taking turns so they share the noise."""
    import torch

    torch.set_num_threads(threads)
    models = {variant: make_model(variant, experts) for variant in variants}
    ids = torch.randint(0, 4096, (batch, length))
    best = dict.fromkeys(variants, math.inf)
    for round_index in range(rounds + 1):  # round 0 warms up
        warm = round_index > 0
        for variant, model in models.items():
            start = time.perf_counter()
            model(input_ids=ids, labels=ids).loss.backward()
            elapsed = time.perf_counter() - start
            model.zero_grad()
            if warm:
                best[variant] = min(best[variant], elapsed)
    return best


def child(variant: str, experts: int, batch: int, length: int, steps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    model = make_model(variant, experts)
    ids = torch.randint(0, 4096, (batch, length))
    saved_bytes = [0]

    def pack(tensor):
        saved_bytes[0] += tensor.numel() * tensor.element_size()
        return tensor

    baseline = rss_mb()  # the model built, no step run yet
    reset_peak_rss()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids).loss.backward()           # the first step; count saved activations
    model.zero_grad()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        times.append(time.perf_counter() - start)
        model.zero_grad()
    return {"variant": variant, "moe_experts": experts, "composed_experts": experts ** 2,
            "parameters": sum(p.numel() for p in model.parameters()),
            "step_s": min(times), "saved_activation_mb": saved_bytes[0] / 1e6,  # min: the least disturbed step
            "peak_rss_mb": peak_rss_mb(), "rss_growth_mb": round(peak_rss_mb() - baseline, 1)}


def run_child(variant, experts, args) -> dict:
    command = [__file__, "--child", variant, str(experts), str(args.batch), str(args.length), str(args.steps),
               str(args.threads)]
    completed = measured_python(command, check=False, env={"OMP_NUM_THREADS": str(args.threads)})
    if completed["returncode"]:
        return {"variant": variant, "moe_experts": experts, "error": completed["stderr"].strip().splitlines()[-1:]}
    return {**json.loads(completed["stdout"].strip().splitlines()[-1]), "cpu_s": completed["cpu_s"]}


def train_on_real_text(data: str, minutes: float) -> dict:
    from moetools.train import TrainOptions, train

    with tempfile.TemporaryDirectory() as out:
        options = TrainOptions(data=data, output=out, arch="monet-vd", steps=100_000, batch_size=8, seq_len=128,
                               model_settings={**SHAPE, "moe_experts": 64, "moe_topk": 4}, eval_every=100, eval_batches=4,
                               checkpoint_every=10_000_000, max_minutes=minutes, vocab_size=4096,
                               warmup=50, lr=1e-3)
        log = []
        metadata = train(options, on_log=log.append)
    to_bits = 1 / math.log(2)
    curve = [{"step": r["step"], "eval_loss_bits": r["eval_loss"] * to_bits} for r in log if r["type"] == "eval"]
    train_curve = [{"step": r["step"], "lm_loss_bits": r["lm_loss"] * to_bits} for r in log
                   if r["type"] == "train" and (r["step"] % 25 == 0 or r["step"] == 1)]
    return {"minutes": minutes, "steps": metadata["steps"], "tokens": metadata["tokens"], "train_curve": train_curve,
            "unigram_entropy_bits": metadata["unigram_entropy_bits"], "eval_curve": curve,
            "final_eval_bits": curve[-1]["eval_loss_bits"] if curve else None}


def main() -> None:
    options = parser(__doc__, "monet")  # --quick: small batch, moe_experts in {16, 64}, 3 steps
    options.add_argument("--threads", type=int, default=2)
    options.add_argument("--rounds", type=int, default=8, help="interleaved timed steps of every variant")
    options.add_argument("--data", help="JSONL corpus: also train MONET-VD on it for --minutes")
    options.add_argument("--minutes", type=float, default=10.0)
    options.add_argument("--skip-speed", action="store_true",
                         help="only the --data run, added to the existing --output JSON")
    options.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = options.parse_args()
    if args.child:
        variant, experts, batch, length, steps, threads = args.child
        print(json.dumps(child(variant, int(experts), int(batch), int(length), int(steps), int(threads))))
        return
    if args.skip_speed:
        if not args.data:
            options.error("--skip-speed needs --data")
        result = read_result(args.output)
        result["real_text"] = train_on_real_text(args.data, args.minutes)
        write_result(args, result)
        print(json.dumps(result["real_text"], indent=1))
        return
    args.batch, args.length, args.steps = (2, 64, 1) if args.quick else (4, 128, 1)
    if args.quick:
        args.rounds = min(args.rounds, 3)
    sizes = (16, 64) if args.quick else (16, 64, 256)
    rows = []
    for experts in sizes:
        variants = [v for v in ("monet-vd", "monet-hd", "llama", "naive") if v != "naive" or experts <= 64]
        # memory: one child process per variant (peak RSS is its own); time: one process, interleaved
        timed = time_interleaved([v for v in variants if v != "naive" or experts <= 16], experts,
                                 args.batch, args.length, args.rounds, args.threads)
        for variant in variants:
            row = run_child(variant, experts, args)
            if variant in timed:
                row["step_s"] = timed[variant]
            else:
                row["step_s_separate_process"] = row.pop("step_s", None)
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    by = {(r["variant"], r["moe_experts"]): r for r in rows if "error" not in r}
    ratios = {}
    for experts in sizes:
        dense = by.get(("llama", experts))
        for variant in ("monet-vd", "monet-hd", "naive"):
            row = by.get((variant, experts))
            if row and dense and "step_s" in row:
                ratios[f"{variant}/llama step time @E={experts}"] = round(row["step_s"] / dense["step_s"], 3)
        if ("naive", experts) in by and ("monet-vd", experts) in by:
            ratios[f"naive/monet-vd saved activations @E={experts}"] = round(
                by[("naive", experts)]["saved_activation_mb"] / by[("monet-vd", experts)]["saved_activation_mb"], 2)
    for variant in ("monet-vd", "monet-hd"):
        if (variant, sizes[0]) in by and (variant, sizes[-1]) in by:
            small, large = by[(variant, sizes[0])], by[(variant, sizes[-1])]
            ratios[f"{variant} saved activations E={sizes[-1]} / E={sizes[0]} (E ratio {sizes[-1] // sizes[0]})"] = \
                round(large["saved_activation_mb"] / small["saved_activation_mb"], 2)
    result = {"threads": args.threads, "batch": args.batch, "seq_len": args.length, "shape": SHAPE, "rows": rows, "ratios": ratios}
    if args.data:
        result["real_text"] = train_on_real_text(args.data, args.minutes)
    write_result(args, result)
    for name, value in ratios.items():
        print(f"{name:60s} {value}")
    if args.data:
        real = result["real_text"]
        print(f"real text: {real['steps']} steps in {real['minutes']} min, eval {real['final_eval_bits']} bits/token "
              f"vs unigram entropy {real['unigram_entropy_bits']:.3f}")


if __name__ == "__main__":
    main()
