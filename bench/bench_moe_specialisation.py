"""Which small top-k MoE (the demo's OLMoE baseline) specialises by domain without a collapsed layer?

On a full demo run the top-k MoE (8 experts, top-2, OLMoE's load-balancing weight 0.01) barely
specialised (2 experts significant at q < 0.05 against 0 for its random-init copy) and one layer
collapsed (two experts took ~100% of the tokens of every domain). This sweep trains MoE
configurations at the demo's budget (400 steps, lr 1e-3, the demo corpus) over experts per layer,
top-k and the load-balancing loss weight (``router_aux_loss_coef``), traces each and its random-init
copy on the demo's slice (``moetools.demo.balanced_slice``, 4,000 tokens per domain) and asks:

- ``significant``: experts per layer passing MONET's 2x skew criterion (paper 004 §5.1) with
  q < 0.05 in moe-score's permutation test (``moetools.score.permutation``), trained and random-init;
- ``excess``: significant trained − significant random-init (summed over the layers);
- ``max_share_vs_uniform``: per layer, the busiest expert's share of all the layer's routing slots
  (every domain together) divided by uniform (1/E of the slots = k/E of the tokens); a layer above
  3x uniform counts as collapsed (two of 8 experts taking every token with k = 2 is 4x). The worst
  single domain's figure is recorded beside it (``worst_domain_vs_uniform``): an expert taking most of
  one domain's tokens is specialisation, not collapse, and a random-init copy already reaches 5-7x there;
- ``health``: moe-score's routing health per layer (``moetools.score.health``: entropy_norm, collapsed);
- eval loss and training time (s/step).

Verdict per configuration: ``pass`` when the trained model has clearly more significant experts than
its random-init copy (excess ≥ 2 and ≥ 2x random's count) and no layer is above 3x uniform. The pick
is the passing configuration with the largest excess (ties: lower eval loss); when none passes, the
best by excess among those without collapse, else by excess, named with what it misses.

    .venv/bin/python bench/bench_moe_specialisation.py                 # every configuration
    .venv/bin/python bench/bench_moe_specialisation.py --only e16-k2-aux0.1   # one (repeatable)
    .venv/bin/python bench/bench_moe_specialisation.py --list
    .venv/bin/python bench/bench_moe_specialisation.py --quick   # e8-k2-aux0.1 at 100 steps, 1000 tokens/domain
    .venv/bin/python bench/bench_moe_specialisation.py --rescore # the figures again from the kept scores files

Trained models are kept under ``$MOETOOLS_HOME/bench_moe_specialisation/<name>/`` (a rerun reuses
them); results go to ``bench/results/moe_specialisation.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from _harness import moetools_home, parser, read_result, run_tool, train_resumable, write_result

from moetools.demo import balanced_slice, model_is_complete
from moetools.demo.run import DEFAULT_STEPS, DEFAULT_TOKENS_PER_DOMAIN
from moetools.score.health import COLLAPSE_FACTOR, max_share_vs_uniform
from moetools.score.specialisation import random_init_copy

LR = 1e-3  # the demo's (moetools.demo.run.DEFAULT_RECIPES)

#: name -> (experts per layer, top-k, router_aux_loss_coef); expert size from the matching rule
#: (moetools.train.models): active expert parameters equal MONET's, so top-1 experts are twice as wide
CONFIGURATIONS = {  # in the order a sweep runs them: the likeliest to pass first
    "e16-k2-aux0.1": (16, 2, 0.1),
    "e8-k2-aux0.1": (8, 2, 0.1),
    "e16-k1-aux0.1": (16, 1, 0.1),
    "e32-k2-aux0.1": (32, 2, 0.1),
    "e8-k2-aux0.01": (8, 2, 0.01),     # the demo's MoE until now (OLMoE's default weight)
    "e16-k2-aux0.01": (16, 2, 0.01),
    "e32-k4-aux0.1": (32, 4, 0.1),
}


home = moetools_home


def run(tool: str, arguments: list[str]) -> float:
    """Run ``tool`` in a fresh process; its wall seconds."""
    return run_tool(tool, arguments, bench="bench_moe_specialisation")


def train(name: str, out: Path, corpus: Path, tokenizer: Path | None, steps: int) -> dict:
    experts, top_k, aux = CONFIGURATIONS[name]
    if not model_is_complete(out):
        config = out.parent / f"{name}.config.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({"num_experts": experts, "num_experts_per_tok": top_k,
                                      "router_aux_loss_coef": aux}))
        command = ["-q", "--arch", "moe", "--data", str(corpus), "-o", str(out), "--steps", str(steps),
                   "--lr", str(LR), "--config", str(config),
                   "--eval-every", str(max(1, steps // 5)), "--checkpoint-every", str(max(1, steps // 5))]
        train_resumable(command, out, tokenizer, bench="bench_moe_specialisation")
    metadata = json.loads((out / "training_metadata.json").read_text())
    written = json.loads((out / "config.json").read_text())
    assert written["router_aux_loss_coef"] == aux, "the load-balancing weight did not reach the model config"
    elapsed, done = metadata.get("elapsed_s"), metadata.get("steps")
    return {"num_experts": experts, "top_k": top_k, "router_aux_loss_coef": aux, "steps": steps, "lr": LR,
            "intermediate_size": written.get("intermediate_size"), "steps_done": done, "elapsed_s": elapsed,
            "s_per_step": round(elapsed / done, 3) if elapsed and done else None, "tokens": metadata.get("tokens"),
            "parameters": metadata.get("parameters"),
            "eval_loss": (metadata.get("last_eval") or {}).get("eval_loss"),
            "eval_loss_by_domain": (metadata.get("last_eval") or {}).get("eval_loss_by_domain")}


def score(model: Path, sample: Path, work: Path, permutations: int) -> dict:
    """Trace ``model`` on the slice, run moe-score's permutation test; per-layer figures."""
    # names spelled out: with_suffix would cut "e16-k2-aux0.1.trained" and ".random" to one name
    trace_path, scores_path = Path(f"{work}.trace.msgpack.zst"), Path(f"{work}.scores.jsonl")
    trace_s = run("moe-trace", [str(model), str(sample), "-q", "--max-length", "256", "-o", str(trace_path),
                                "--force"])
    score_s = run("moe-score", [str(trace_path), "-q", "--permutations", str(permutations),
                                "-o", str(scores_path), "--force"])
    trace_path.unlink()
    return {**figures(scores_path), "trace_s": round(trace_s, 1), "score_s": round(score_s, 1)}


def figures(scores_path: Path) -> dict:
    """Per-layer figures from moe-score's output (kept beside the models: ``--rescore`` reads them again)."""
    records = [json.loads(line) for line in scores_path.read_text().splitlines() if line.strip()]
    header, summary = records[0], records[-1]["summary"]
    layers = [str(layer) for layer in header["layers"]]
    experts = header["num_experts"]
    domains = list(header["domains"])
    routed = np.zeros((len(domains), len(layers), experts))  # (D, L, E) routed counts
    for record in records:
        if record.get("type") == "expert":
            for d, domain in enumerate(domains):
                routed[d, layers.index(str(record["layer"])), record["expert"]] = \
                    record["domains"][domain].get("routed") or 0
    max_share = {layer: {**worst, "worst_domain": None if worst["worst_domain"] is None else
                         domains[worst["worst_domain"]]}
                 for layer, worst in zip(layers, max_share_vs_uniform(routed))}
    skew = summary["skew"]
    health = {layer: {key: value[key] for key in ("entropy_norm", "max_share", "collapsed")}
              for layer, value in summary["health"]["layers"].items()}
    return {"experts": experts, "significant": {layer: skew["significant"][layer] for layer in layers},
            "significant_total": skew["significant_total"],
            "specialised": {layer: skew["specialised"][layer] for layer in layers},
            "expected_under_null": {layer: round(skew["expected_under_null"][layer], 1) for layer in layers},
            "max_share_vs_uniform": max_share, "worst_max_share_vs_uniform": max(v["vs_uniform"] for v in max_share.values()),
            "health": health, "permutations": skew["permutations"]}


def verdict(trained: dict, random: dict) -> dict:
    excess = trained["significant_total"] - random["significant_total"]
    collapsed = [layer for layer, value in trained["max_share_vs_uniform"].items()
                 if value["vs_uniform"] > COLLAPSE_FACTOR]
    clear = excess >= 2 and trained["significant_total"] >= 2 * random["significant_total"]
    misses = []
    if not clear:
        misses.append(f"significant {trained['significant_total']} vs random-init {random['significant_total']} "
                      "is not clearly above")
    if collapsed:
        misses.append(f"layer(s) {', '.join(collapsed)} above {COLLAPSE_FACTOR:g}x uniform")
    return {"excess": excess, "collapsed_layers": collapsed, "clear_specialisation": clear,
            "pass": clear and not collapsed, "misses": misses}


def measure(name: str, args, sample: Path, taken: dict, tokenizer: Path | None) -> dict:
    root = home() / "bench_moe_specialisation" / ("quick" if args.quick else "")  # a --quick model is not a full one
    model = root / name
    started = time.perf_counter()
    training = train(name, model, args.corpus / "train.jsonl", tokenizer, args.steps)
    random_dir = root / f"{name}.random-init"
    if not model_is_complete(random_dir):
        random_init_copy(model, random_dir, seed=0)
    trained = score(model, sample, root / f"{name}.trained", args.permutations)
    random = score(random_dir, sample, root / f"{name}.random", args.permutations)
    return {"training": training, "trained": trained, "random_init": random, "verdict": verdict(trained, random),
            "tokens_per_domain": taken, "seconds": round(time.perf_counter() - started, 1)}


def pick(section: dict) -> dict | None:
    entries = {key: value for key, value in section.items() if isinstance(value, dict) and "verdict" in value}
    if not entries:
        return None

    def rank(key):
        entry = entries[key]
        return (entry["verdict"]["pass"], not entry["verdict"]["collapsed_layers"], entry["verdict"]["excess"],
                -(entry["training"]["eval_loss"] or 99))
    best = max(entries, key=rank)
    verdict = entries[best]["verdict"]
    return {"name": best, "meets_bar": verdict["pass"], "misses": verdict["misses"],
            "rule": "passing (clear significant excess over random init, no layer above 3x uniform) with the "
                    "largest excess, then lowest eval loss; else the best without collapse"}


def rescore(args) -> int:
    """The figures, verdicts and pick again from the scores files a sweep kept (no training, no tracing)."""
    latest = read_result(args.output)
    latest.pop("machine", None)
    root = home() / "bench_moe_specialisation"
    for name, entry in latest.get("configurations", {}).items():
        for key, kind in (("trained", "trained"), ("random_init", "random")):
            seconds = {k: entry[key][k] for k in ("trace_s", "score_s") if k in entry[key]}
            entry[key] = {**figures(root / f"{name}.{kind}.scores.jsonl"), **seconds}
        entry["verdict"] = verdict(entry["trained"], entry["random_init"])
        print(f"{name}: max share vs uniform {entry['trained']['worst_max_share_vs_uniform']}x -> "
              f"{'PASS' if entry['verdict']['pass'] else entry['verdict']['misses']}")
    latest["pick"] = pick(latest.get("configurations", {}))
    write_result(args, latest)
    return 0


def main(argv=None) -> int:
    made = parser(__doc__, "moe_specialisation")
    made.add_argument("--only", action="append", choices=sorted(CONFIGURATIONS), default=[])
    made.add_argument("--list", action="store_true", help="print the configurations and exit")
    made.add_argument("--corpus", type=Path, default=home() / "corpus", help="the demo corpus directory")
    made.add_argument("--tokenizer", type=Path, default=None,
                      help="tokenizer directory (default: the first configuration trains the demo's BPE, "
                           "the others reuse it)")
    made.add_argument("--permutations", type=int, default=None, help="1000 (--quick: 200)")
    made.add_argument("--rescore", action="store_true",
                      help="recompute every recorded configuration's figures and verdict from its kept scores files")
    args = made.parse_args(argv)
    if args.rescore:
        return rescore(args)
    args.permutations = args.permutations or (200 if args.quick else 1000)
    args.steps = 100 if args.quick else DEFAULT_STEPS
    budget = 1000 if args.quick else DEFAULT_TOKENS_PER_DOMAIN
    if args.quick:
        args.only = args.only or ["e8-k2-aux0.1"]
    if args.list:
        for name, values in CONFIGURATIONS.items():
            print(name, dict(zip(("num_experts", "top_k", "router_aux_loss_coef"), values)))
        return 0
    about = __doc__.split("\n\n")[1].replace("\n", " ")
    root = home() / "bench_moe_specialisation" / ("quick" if args.quick else "")
    sample = root / f"slice-{budget}.jsonl"
    taken = balanced_slice(args.corpus / "validation.jsonl", budget, sample)
    tokenizer = args.tokenizer
    for name in args.only or list(CONFIGURATIONS):
        print(f"{name}: training/tracing/scoring ...", flush=True)
        entry = measure(name, args, sample, taken, tokenizer)
        if tokenizer is None:
            tokenizer = root / name  # its BPE, the same for every configuration
        t, r, v = entry["trained"], entry["random_init"], entry["verdict"]
        print(f"{name}: eval loss {entry['training']['eval_loss']:.3f}, {entry['training']['s_per_step']} s/step; "
              f"significant per layer {t['significant']} (random-init {r['significant']}), excess {v['excess']}; "
              f"max share vs uniform {t['worst_max_share_vs_uniform']}x -> {'PASS' if v['pass'] else v['misses']}",
              flush=True)
        latest = read_result(args.output)  # read again: two sweeps (--only ...) may share the file
        latest.pop("machine", None)
        latest["about"] = about
        latest.setdefault("configurations", {})[name] = entry
        latest["pick"] = pick(latest["configurations"])
        write_result(args, latest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
