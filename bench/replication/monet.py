"""Paper 004: MONET-VD against a matched top-k MoE, on specialisation and domain masking (§5.1).

Per seed, for each of the shared MoE and MONET-VD (the demo's recipes):

- specialisation: ``moe-trace`` of a balanced validation slice, and of a random-init copy of the same model
  (routing depends on the tokens even untrained), each through ``moe-score``'s permutation test of the 2x
  domain skew (domains shuffled across documents, BH q < 0.05), as bench/bench_monet_specialisation.py does.
  Figure: the share of experts significantly skewed, trained minus random-init (what training added).
- masking (the demo's chain step): experts per domain chosen by DAS on a balanced slice of the *training*
  split (``moe-select --by das --domain D --top m``, m = the demo's select_top), random sets of the same size
  (seeds 0-2), each masked (``moe-mask``) and evaluated on the validation slice (``moe-eval``). Figure:
  mean over domains D of [loss change on D when D's experts are masked - the mean change on the other
  domains] (the domain specificity of the mask), and the same against random sets (D's experts vs random).
"""

from __future__ import annotations

import shutil

from moetools.score.specialisation import random_init_copy

from .common import claim, read_jsonl

SPECIALISATION, MASKING = "monet_specialisation", "domain_masking"
ARCHS = ("monet-vd", "moe")
RANDOM_SEEDS = (0, 1, 2)


def _skew(scores) -> dict:
    records = read_jsonl(scores)
    header, skew = records[0], records[-1]["summary"]["skew"]
    experts = len(header.get("layers") or []) * int(header["num_experts"])
    return {"experts": experts, "significant": skew["significant_total"], "pass_2x": skew["specialised_total"],
            "expected_2x": skew["expected_under_null_total"], "significant_share": skew["significant_total"] / experts}


def specialisation(ctx, seed: int, arch: str) -> dict:
    def work(out):
        model, corpus = ctx.model(arch, seed), ctx.slice("validation")
        random_dir = out / "random-init"
        if random_dir.exists():
            shutil.rmtree(random_dir)
        random_init_copy(model, random_dir, seed=seed)
        figures = {}
        for name, directory in (("trained", model), ("random_init", random_dir)):
            trace, scores = out / f"{name}.trace.msgpack.zst", out / f"{name}.scores.jsonl"
            ctx.tool("moe-trace", "-q", directory, corpus, "--max-length", ctx.budget.seq_len, "--device", ctx.device,
                     "-o", trace, "--force")
            ctx.tool("moe-score", "-q", trace, "--permutations", ctx.budget.permutations, "-o", scores, "--force")
            figures[name] = _skew(scores)
            trace.unlink()
        shutil.rmtree(random_dir)
        figures["learned_share"] = figures["trained"]["significant_share"] - figures["random_init"]["significant_share"]
        return figures
    return ctx.stage(SPECIALISATION, seed, arch, work)


def masking(ctx, seed: int, arch: str) -> dict:
    def work(out):
        from transformers.utils import logging as hf_logging

        from moetools.mask import mask_directory

        hf_logging.disable_progress_bar()
        model, top = ctx.model(arch, seed), str(ctx.recipe(arch).select_top)
        trace, scores = out / "train.trace.msgpack.zst", out / "train.scores.jsonl"
        ctx.tool("moe-trace", "-q", model, ctx.slice("train"), "--max-length", ctx.budget.seq_len,
                 "--device", ctx.device, "-o", trace, "--force")
        ctx.tool("moe-score", "-q", trace, "--permutations", "0", "-o", scores, "--force")
        trace.unlink()
        domains = ctx.domains()
        sets = {d: ["--by", "das", "--domain", d, "--top", top] for d in domains}
        sets.update({f"random-{r}": ["--random", top, "--seed", str(100 * seed + r)] for r in RANDOM_SEEDS})
        masked = []
        for name, how in sets.items():
            chosen, directory = out / f"{name}.json", out / "masked" / name
            ctx.tool("moe-select", "-q", scores, *how, "-o", chosen, "--force")
            ctx.log(f"$ moe-mask -q {model} --experts {chosen} -o {directory} --force   # in this process")
            mask_directory(model, chosen, directory, force=True)  # as the demo's chain: one torch start, not 9
            masked.append(directory)
        evaluation = out / "eval.jsonl"
        ctx.tool("moe-eval", "-q", model, *masked, "--data", ctx.slice("validation"), "--max-length",
                 ctx.budget.seq_len, "--device", ctx.device, "-o", evaluation, "--force")
        shutil.rmtree(out / "masked")
        names = list(sets)
        delta: dict = {name: {} for name in names}
        for record in read_jsonl(evaluation):
            if record.get("type") == "domain" and record.get("model", 0) > 0:
                delta[names[record["model"] - 1]][record["domain"]] = record["delta_loss"]
        return {"delta_loss": delta, "domains": domains, "experts_per_layer": int(top)}
    return ctx.stage(MASKING, seed, arch, work)


def _specificity(result: dict) -> tuple[float, float]:
    """(own - others, own - random) averaged over domains, for one model and seed."""
    delta, domains = result["delta_loss"], result["domains"]
    randoms = [name for name in delta if name.startswith("random-")]
    own_minus_others, own_minus_random = [], []
    for d in domains:
        own = delta[d][d]
        others = [delta[d][o] for o in domains if o != d]
        own_minus_others.append(own - sum(others) / len(others))
        own_minus_random.append(own - sum(delta[r][d] for r in randoms) / len(randoms))
    return sum(own_minus_others) / len(domains), sum(own_minus_random) / len(domains)


def _excess(figures: dict) -> float:
    """Experts passing 2x beyond the count expected with shuffled domains, as a share: trained - random-init."""
    t, r = figures["trained"], figures["random_init"]
    return ((t["pass_2x"] - t["expected_2x"]) - (r["pass_2x"] - r["expected_2x"])) / t["experts"]


def replicate_specialisation(ctx) -> dict:
    learned = {arch: {s: specialisation(ctx, s, arch)["learned_share"] for s in ctx.seeds} for arch in ARCHS}
    excess = {arch: {s: _excess(specialisation(ctx, s, arch)) for s in ctx.seeds} for arch in ARCHS}
    main = claim("share of experts significantly domain-skewed, trained - random-init: MONET-VD - MoE",
                 {s: learned["monet-vd"][s] - learned["moe"][s] for s in ctx.seeds})
    return {"paper": "paper 004 §5.1 (experts by domain skew, 2x the runner-up)",
            "claim": "MONET's experts specialise by domain more than a matched top-k MoE's (beyond random init)",
            "main": main,
            "also": [*(claim(f"{arch}: significant share trained - random-init", learned[arch]) for arch in ARCHS),
                     claim("share of experts passing 2x beyond chance, trained - random-init: MONET-VD - MoE",
                           {s: excess["monet-vd"][s] - excess["moe"][s] for s in ctx.seeds}),
                     *(claim(f"{arch}: share passing 2x beyond chance, trained - random-init", excess[arch])
                       for arch in ARCHS)],
            "per_seed": {arch: {s: specialisation(ctx, s, arch) for s in ctx.seeds} for arch in ARCHS},
            "caveats": [("MONET-VD's 4 layers share one router: its experts are counted once, the MoE's "
                        "per layer"), "skew test: moe-score's permutation test of 004's 2x criterion"]}


def replicate_masking(ctx) -> dict:
    figures = {arch: {s: _specificity(masking(ctx, s, arch)) for s in ctx.seeds} for arch in ARCHS}
    main = claim("MONET-VD: loss change on D - on the other domains, masking D's DAS experts (nats/token)",
                 {s: figures["monet-vd"][s][0] for s in ctx.seeds})
    also = [claim("MONET-VD: loss change on D, D's experts - random experts of the same size",
                  {s: figures["monet-vd"][s][1] for s in ctx.seeds}),
            claim("MoE: loss change on D - on the other domains, masking D's DAS experts",
                  {s: figures["moe"][s][0] for s in ctx.seeds}),
            claim("MoE: loss change on D, D's experts - random experts", {s: figures["moe"][s][1] for s in ctx.seeds}),
            claim("domain specificity of the mask: MONET-VD - MoE",
                  {s: figures["monet-vd"][s][0] - figures["moe"][s][0] for s in ctx.seeds})]
    return {"paper": "paper 004 §5.1 (domain masking)",
            "claim": "masking a domain's experts raises that domain's loss more than the other domains' "
                     "(and more than masking random experts)",
            "main": main, "also": also,
            "delta_loss": {arch: {s: masking(ctx, s, arch)["delta_loss"] for s in ctx.seeds} for arch in ARCHS},
            "caveats": ["sets chosen by DAS on the training split, evaluated on the validation split",
                        "set sizes are the demo's (moe-select --top: its recipes' select_top)"]}

