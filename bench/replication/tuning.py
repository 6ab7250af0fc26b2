"""Papers 000/003 selective fine-tuning: tune the experts chosen by a domain criterion, against full fine-tuning,
LoRA and random experts; in-domain gain and out-of-domain loss.

Per seed, on the shared MoE (the demo's: 8 experts per layer, top-2): expert sets of m = top-k experts per layer chosen
on a balanced slice of the training split (``moe-trace | moe-score``, then ``moe-select``): by DAS (paper 003
eq. 1, medical vs the other domains), by the routing proxy (mean routing probability on medical text, ``--by
prob``: 003 Table 5's direct routing score standing in for EDMRS, which needs LLM labels) and at random
(``--random m --seed S``). Each mode tunes on the corpus's medical training text for the same steps, batch
and lr through bench/bench_tuning.py's ``run_mode`` (moe-tune's Tuner in a measured child process), and is
evaluated on every domain's validation text against the untouched base.

Figures: in-domain gain = base medical loss - tuned medical loss (nats/token); out-of-domain loss = mean
over the other domains of tuned - base. Main: DAS experts gain more in-domain than random experts.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench_tuning import base_losses, run_mode, split_corpus

from .common import claim

NAME = "selective_finetuning"
PAPER = "paper 003 §2.2, §4.2 (DAS experts); paper 000 §5.1-5.2 (EDMRS experts vs Full, AF, LoRA)"
CLAIM = ("tuning domain-chosen experts gains more in-domain than tuning random experts of the same number, "
         "and loses less out of domain than full fine-tuning")
MODES = ("full", "experts-das", "experts-routing", "experts-random", "lora")


def sets(ctx, seed: int) -> dict:
    """experts.json per criterion, from routing scores of the MoE on the training slice."""
    def work(out):
        model = ctx.model("moe", seed)
        top = str(json.loads((model / "config.json").read_text()).get("num_experts_per_tok") or 2)
        trace, scores = out / "trace.msgpack.zst", out / "scores.jsonl"
        ctx.tool("moe-trace", "-q", model, ctx.slice("train"), "--max-length", ctx.budget.seq_len,
                 "--device", ctx.device, "-o", trace, "--force")
        ctx.tool("moe-score", "-q", trace, "--permutations", "0", "-o", scores, "--force")
        paths = {}
        for name, how in (("das", ["--by", "das", "--domain", "medical", "--top", top]),
                          ("routing", ["--by", "prob", "--domain", "medical", "--top", top]),
                          ("random", ["--random", top, "--seed", str(seed)])):
            paths[name] = str(out / f"{name}.json")
            ctx.tool("moe-select", "-q", scores, *how, "-o", paths[name], "--force")
        trace.unlink()
        return {"paths": paths, "per_layer": int(top),
                "sets": {n: json.loads(Path(p).read_text())["experts"] for n, p in paths.items()}}
    return ctx.stage(NAME, seed, "sets", work)


def files(ctx) -> dict:
    out = ctx.root / NAME / "data"
    if not (out / "medical.jsonl").is_file():
        out.mkdir(parents=True, exist_ok=True)
        split_corpus(ctx.corpus, out)  # bench_tuning's: train-medical, train-general, one file per val domain
    return {p.stem: p for p in out.glob("*.jsonl")}


def tune(ctx, seed: int, mode: str, chosen: dict) -> dict:
    def work(out):
        extra = {"mode": mode.split("-")[0], "seed": seed, "force": True}  # eval: run_mode's 64 batches, as base
        if mode.startswith("experts-"):
            extra["experts"] = chosen["paths"][mode.split("-", 1)[1]]
        summary = run_mode(mode, ctx.model("moe", seed), files(ctx), out, ctx.budget.tune_steps, ctx.budget.seq_len,
                           **extra)
        return {"losses": summary["last_eval"]["eval_loss_by_domain"],
                "trainable_parameters": summary["trainable_parameters"], "steps": summary["steps"]}
    return ctx.stage(NAME, seed, mode, work)


def base(ctx, seed: int) -> dict:
    def work(out):
        losses = base_losses(ctx.model("moe", seed), files(ctx), out, ctx.budget.seq_len)
        return {"losses": losses["eval_loss_by_domain"]}
    return ctx.stage(NAME, seed, "base", work)


def replicate(ctx) -> dict:
    gain, ood, params = {m: {} for m in MODES}, {m: {} for m in MODES}, {}
    for seed in ctx.seeds:
        chosen = sets(ctx, seed)
        reference = base(ctx, seed)["losses"]
        for mode in MODES:
            result = tune(ctx, seed, mode, chosen)
            losses = result["losses"]
            gain[mode][seed] = reference["medical"] - losses["medical"]
            others = [d for d in losses if d != "medical" and d in reference]
            ood[mode][seed] = sum(losses[d] - reference[d] for d in others) / len(others)
            params[mode] = result["trainable_parameters"]
    s = ctx.seeds
    main = claim("in-domain gain: DAS experts - random experts (nats/token)",
                 {x: gain["experts-das"][x] - gain["experts-random"][x] for x in s})
    also = [claim("in-domain gain: routing-proxy experts - random experts",
                  {x: gain["experts-routing"][x] - gain["experts-random"][x] for x in s}),
            claim("out-of-domain loss: full FT - DAS experts (selective forgets less)",
                  {x: ood["full"][x] - ood["experts-das"][x] for x in s}),
            claim("in-domain gain: DAS experts - LoRA", {x: gain["experts-das"][x] - gain["lora"][x] for x in s})]
    return {"paper": PAPER, "claim": CLAIM, "main": main, "also": also,
            "in_domain_gain": {m: claim(f"{m}: in-domain gain", gain[m]) for m in MODES},
            "out_of_domain_loss": {m: claim(f"{m}: out-of-domain loss change", ood[m]) for m in MODES},
            "trainable_parameters": params,
            "setup": {"steps": ctx.budget.tune_steps, "batch": f"8 x {ctx.budget.seq_len}", "lr": 1e-3,
                      "data": "corpus train split, domain medical", "experts_per_layer": "the model's top-k"},
            "caveats": ["EDMRS needs LLM labels of every expert: the routing proxy (--by prob) stands in for it",
                        "a chosen set is the MoE's top-k experts per layer (the demo MoE: 2 of 8)"]}
