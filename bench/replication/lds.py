"""Paper 000 Insight 1: more active experts per token -> lower LDS (the same model traced with ``--top-k``).

The logic of bench/bench_topk_lds.py, per seed on the shared MoE (trained top-2): for each k::

    moe-trace MOE validation-slice --top-k k | moe-sample (10 + 10 held out) | moe-explain --backend offline
    moe-score samples --labels labels --backend embedding          # EMS per expert, LDS per layer (000 eq. 5)

Figure: mean LDS over layers at the smallest k minus at the largest k (claimed > 0). The labels are the
offline explainer's and the judge the embedding scorer: no LLM, so not paper 000's GPT-4o-mini figures.
"""

from __future__ import annotations

import statistics

from .common import claim, read_jsonl

NAME = "lds_vs_k"
PAPER = "paper 000 §3.2 (Insight 1)"
CLAIM = "more active experts per token (larger k) -> lower LDS"
HOLDOUT = 10


def run_k(ctx, seed: int, k: int) -> dict:
    def work(out):
        model, corpus = ctx.model("moe", seed), ctx.slice("validation")
        trace, samples, labels, judged = (out / n for n in ("trace.msgpack.zst", "samples.msgpack.zst",
                                                             "labels.jsonl", "judged.scores.jsonl"))
        ctx.tool("moe-trace", "-q", model, corpus, "--top-k", k, "--max-length", ctx.budget.seq_len,
                 "--device", ctx.device, "-o", trace, "--force")
        ctx.tool("moe-sample", "-q", trace, "--holdout-positive", HOLDOUT, "--holdout-negative", HOLDOUT,
                 "-o", samples, "--force")
        ctx.tool("moe-explain", "-q", samples, "--backend", "offline", "--no-cache", "-o", labels, "--force")
        ctx.tool("moe-score", "-q", samples, "--labels", labels, "--backend", "embedding", "--positives", HOLDOUT,
                 "--negatives", HOLDOUT, "-o", judged, "--force")
        records = read_jsonl(judged)
        layers = [r for r in records if r.get("type") == "layer"]
        trace.unlink()
        return {"k": k, "layers": [{key: r.get(key) for key in ("layer", "experts", "lds", "lds_shuffled")}
                                   for r in layers],
                "lds": _mean([r.get("lds") for r in layers]),
                "lds_shuffled": _mean([r.get("lds_shuffled") for r in layers])}
    return ctx.stage(NAME, seed, f"k{k}", work)


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def replicate(ctx) -> dict:
    ks = ctx.budget.ks
    runs = {seed: {k: run_k(ctx, seed, k) for k in ks} for seed in ctx.seeds}
    lo, hi = min(ks), max(ks)

    def diff(seed, key):
        a, b = runs[seed][lo][key], runs[seed][hi][key]
        return None if a is None or b is None else a - b

    main = claim(f"LDS(k={lo}) - LDS(k={hi}), mean over layers", {s: diff(s, "lds") for s in ctx.seeds})
    above = claim(f"LDS - shuffled-label LDS at k={lo} minus at k={hi}",
                  {s: None if diff(s, "lds") is None or diff(s, "lds_shuffled") is None
                   else diff(s, "lds") - diff(s, "lds_shuffled") for s in ctx.seeds})
    return {"paper": PAPER, "claim": CLAIM, "main": main, "also": [above],
            "lds_by_k": {str(k): claim(f"LDS at k={k}", {s: runs[s][k]["lds"] for s in ctx.seeds}) for k in ks},
            "lds_shuffled_by_k": {str(k): claim(f"shuffled LDS at k={k}", {s: runs[s][k]["lds_shuffled"]
                                                                           for s in ctx.seeds}) for k in ks},
            "model": "moe (trained top-2), traced with --top-k k",
            "caveats": ["offline labels judged by the embedding scorer (all-MiniLM-L6-v2), not an LLM",
                        "k != 2 runs the model off its training distribution"]}
