"""Paper 002 k-sparse probing: MoE expert neurons vs the matched dense model's FFN neurons.

bench/bench_probe.py's measurement per seed, on the shared models: ``moe-probe neurons`` on a balanced slice
of the test split for the MoE and for the matched dense model (``monet-train --arch llama``: same attention,
width, depth, data, steps, seed and tokenizer, an MLP with the MoE's active parameters). Test F1 of the best
layer/expert per concept (chosen by training F1), averaged over the concepts probed in both models.
Main figure: MoE - dense at k = 1 (claimed > 0: expert neurons are more sparsely decodable).
"""

from __future__ import annotations

from bench_probe import best_f1, mean_curve

from .common import claim, eval_loss, read_jsonl

NAME = "sparse_probing"
PAPER = "paper 002 (main results: k-sparse probing, MoE vs dense)"
CLAIM = "k-sparse probes on MoE expert neurons reach a higher F1 than on a matched dense model's neurons"


def probe(ctx, seed: int, arch: str) -> dict:
    def work(out):
        model = ctx.model(arch, seed)
        records = out / "probe.jsonl"
        ctx.tool("moe-probe", "neurons", "-q", model, ctx.slice("test"), "--max-length", ctx.budget.seq_len,
                 "--seed", seed, "--device", ctx.device, "-o", records, "--force")
        rows = read_jsonl(records)
        return {"best_test_f1": best_f1(rows[1:-1]), "eval_loss": eval_loss(model)}
    return ctx.stage(NAME, seed, arch, work)


def replicate(ctx) -> dict:
    curves = {}
    for seed in ctx.seeds:
        moe, dense = probe(ctx, seed, "moe"), probe(ctx, seed, "dense")
        shared = sorted(set(moe["best_test_f1"]) & set(dense["best_test_f1"]))
        curves[seed] = {"moe": mean_curve(moe["best_test_f1"], shared),
                        "dense": mean_curve(dense["best_test_f1"], shared), "concepts": len(shared),
                        "eval_loss": {"moe": moe["eval_loss"], "dense": dense["eval_loss"]}}
    ks = sorted({int(k) for c in curves.values() for k in c["moe"] if k in c["dense"]})

    def at(k):
        return {s: c["moe"][str(k)] - c["dense"][str(k)] if str(k) in c["moe"] and str(k) in c["dense"] else None
                for s, c in curves.items()}
    main = claim("mean best test F1 at k=1: MoE - dense", at(1))
    return {"paper": PAPER, "claim": CLAIM, "main": main,
            "also": [claim(f"mean best test F1 at k={k}: MoE - dense", at(k)) for k in ks if k != 1],
            "curves": curves,
            "caveats": [("an expert's probe sees only the tokens routed to it (002's protocol); the MoE's best is "
                        "over layers x experts candidates, the dense model's over layers")]}
