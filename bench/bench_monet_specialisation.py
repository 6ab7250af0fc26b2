"""Which small MONET-VD shows learned domain specialisation above its random-init copy?

The demo's first MONET-VD (64² = 4,096 composed experts per layer, ~20k traced tokens per domain)
passed MONET's 2× skew criterion (paper 004 §5.1) *fewer* times than its random-init copy, and most
of its experts saw too few tokens to explain. This sweep trains MONET-VD configurations on the demo
corpus and asks of each, trained and random-init side by side, the permutation question of moe-score
(``moetools.score.permutation``: domain labels shuffled across documents, p per expert, BH q over
the layer's experts) instead of the raw 2× count:

- ``specialised``: experts whose mean routing probability on one domain is ≥ 2× the runner-up's;
- ``expected_under_null``: the same count averaged over the shuffles (what no specialisation gives);
- ``excess``: specialised − expected_under_null;
- ``significant``: experts passing the criterion with q < 0.05;
- ``explainable``: experts routed ≥ ``--min-count`` traced tokens (what moe-sample keeps to explain).

All figures are for layer 0: MONET-VD's 4 layers share one routing (``moe_groups`` = 4), so the other
layers repeat the same experts. A random-init model's routing already depends on the tokens, and the
domains use different tokens, so its experts are "significant" too: the learned part is the trained
model's figure *beyond* its random-init copy's. Verdict per configuration: ``learned`` when the
trained model has more significant experts than its random-init copy (and a larger excess); the
table says which configurations did and did not, with their validation loss and training time.

    .venv/bin/python bench/bench_monet_specialisation.py                 # every configuration
    .venv/bin/python bench/bench_monet_specialisation.py --only e16-d32  # one (repeatable)
    .venv/bin/python bench/bench_monet_specialisation.py --list
    .venv/bin/python bench/bench_monet_specialisation.py --quick   # e16-d32-100 only, 1000 tokens/domain, 200 perms

Trained models are kept under ``$MOETOOLS_HOME/bench_specialisation/<name>/`` (a rerun reuses them);
results are merged into ``bench/results/specialisation.json`` under ``monet_configurations``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from _harness import moetools_home, parser, read_result, run_tool, train_resumable, write_result

from moetools.demo import balanced_slice, model_is_complete
from moetools.score.specialisation import random_init_copy

#: name -> (experts per factor, expert hidden size, steps, peak lr, router aux loss coefficient).
#: moe_experts x moe_dim is constant (512), so every configuration has the same expert parameters
#: as the demo's first one (64 x 8): only how they are cut into experts changes.
CONFIGURATIONS = {
    "e64-d8": (64, 8, 500, 1e-3, 1e-3),       # the demo's first MONET-VD: 4,096 composed experts
    "e32-d16": (32, 16, 500, 1e-3, 1e-3),     # 1,024
    "e16-d32": (16, 32, 500, 1e-3, 1e-3),     # 256
    "e8-d64": (8, 64, 500, 1e-3, 1e-3),       # 64
    "e16-d32-lr3e-3": (16, 32, 500, 3e-3, 1e-3),
    "e16-d32-aux0": (16, 32, 500, 1e-3, 0.0),
    "e16-d32-aux1e-2": (16, 32, 500, 1e-3, 1e-2),
    "e16-d32-1000": (16, 32, 1000, 1e-3, 1e-3),
    # under-trained, as the demo's models were when the 5-minute cap stopped them on a loaded machine
    "e64-d8-100": (64, 8, 100, 1e-3, 1e-3),
    "e16-d32-100": (16, 32, 100, 1e-3, 1e-3),
}


home = moetools_home


def run(tool: str, arguments: list[str]) -> float:
    """Run ``tool`` in a fresh process; its wall seconds."""
    return run_tool(tool, arguments, bench="bench_monet_specialisation")


def train(name: str, out: Path, corpus: Path, tokenizer: Path | None) -> dict:
    experts, moe_dim, steps, lr, aux = CONFIGURATIONS[name]
    if not model_is_complete(out):
        config = out.parent / f"{name}.config.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({"router_aux_loss_coef": aux}))
        command = ["-q", "--arch", "monet-vd", "--data", str(corpus),
                   "-o", str(out), "--moe-experts", str(experts), "--moe-dim", str(moe_dim),
                   "--steps", str(steps), "--lr", str(lr), "--config", str(config),
                   "--eval-every", str(steps // 5), "--checkpoint-every", str(steps // 5)]
        train_resumable(command, out, tokenizer, bench="bench_monet_specialisation")
    metadata = json.loads((out / "training_metadata.json").read_text())
    return {"moe_experts": experts, "composed_experts": experts * experts, "moe_dim": moe_dim, "steps": steps,
            "lr": lr, "router_aux_loss_coef": aux, "steps_done": metadata.get("steps"),
            "elapsed_s": metadata.get("elapsed_s"), "tokens": metadata.get("tokens"),
            "parameters": metadata.get("parameters"),
            "eval_loss": (metadata.get("last_eval") or {}).get("eval_loss"),
            "eval_loss_by_domain": (metadata.get("last_eval") or {}).get("eval_loss_by_domain")}


def score(model: Path, sample: Path, work: Path, permutations: int, min_count: int) -> dict:
    """Trace ``model`` on the slice, run moe-score's permutation test; layer 0's figures."""
    trace_path, scores_path = work.with_suffix(".trace.msgpack.zst"), work.with_suffix(".scores.jsonl")
    trace_s = run("moe-trace", [str(model), str(sample), "-q", "--max-length", "256",
                   "-o", str(trace_path)])
    score_s = run("moe-score", [str(trace_path), "-q", "--permutations", str(permutations),
                   "-o", str(scores_path)])
    records = [json.loads(line) for line in scores_path.read_text().splitlines() if line.strip()]
    header = records[0]
    layer = header["layers"][0]
    skew = records[-1]["summary"]["skew"]
    explainable = 0
    for record in records:
        if record.get("type") == "expert" and record["layer"] == layer:
            routed = sum(values.get("routed") or 0 for values in record["domains"].values())
            explainable += routed >= min_count
    specialised = skew["specialised"][str(layer)]
    expected = skew["expected_under_null"][str(layer)]
    trace_path.unlink()
    return {"experts": header["num_experts"], "specialised": specialised,
            "expected_under_null": round(expected, 1), "excess": round(specialised - expected, 1),
            "significant": skew["significant"][str(layer)], "explainable": explainable,
            "permutations": skew["permutations"], "trace_s": round(trace_s, 1), "score_s": round(score_s, 1)}


def measure(name: str, args, sample: Path, taken: dict) -> dict:
    root = home() / "bench_specialisation"
    model = root / name
    started = time.perf_counter()
    training = train(name, model, args.corpus / "train.jsonl", args.tokenizer)
    random_dir = root / f"{name}.random-init"
    if not model_is_complete(random_dir):
        random_init_copy(model, random_dir, seed=0)
    trained = score(model, sample, root / f"{name}.trained", args.permutations, args.min_count)
    random = score(random_dir, sample, root / f"{name}.random", args.permutations, args.min_count)
    learned = trained["significant"] > random["significant"] and trained["excess"] > random["excess"]
    return {"training": training, "trained": trained, "random_init": random, "learned": learned,
            "tokens_per_domain": taken, "seconds": round(time.perf_counter() - started, 1)}


def main(argv=None) -> int:
    made = parser(__doc__, "specialisation")  # --quick: e16-d32-100, 1000 tokens per domain, 200 permutations
    made.add_argument("--only", action="append", choices=sorted(CONFIGURATIONS), default=[])
    made.add_argument("--list", action="store_true", help="print the configurations and exit")
    made.add_argument("--corpus", type=Path, default=home() / "corpus", help="the demo corpus directory")
    made.add_argument("--tokenizer", type=Path, default=None,
                        help="tokenizer directory shared by every run (default: each run trains the demo's BPE)")
    made.add_argument("--tokens-per-domain", type=int, action="append", default=[],
                        help="validation tokens per domain traced (repeatable; default 4000, the demo's)")
    made.add_argument("--permutations", type=int, default=None, help="1000 (--quick: 200)")
    made.add_argument("--min-count", type=int, default=40, help="routed tokens an expert needs to be explained")
    args = made.parse_args(argv)
    args.permutations = args.permutations or (200 if args.quick else 1000)
    if args.quick:
        args.only = args.only or ["e16-d32-100"]
        args.tokens_per_domain = args.tokens_per_domain or [1000]
    if args.list:
        for name, values in CONFIGURATIONS.items():
            print(name, values)
        return 0
    section = {}
    section["about"] = __doc__.split("\n\n")[1].replace("\n", " ")
    budgets = args.tokens_per_domain or [4000]
    for name in args.only or list(CONFIGURATIONS):
        for budget in budgets:
            key = name if budget == 4000 else f"{name}@{budget}"
            sample = home() / "bench_specialisation" / f"slice-{budget}.jsonl"
            taken = balanced_slice(args.corpus / "validation.jsonl", budget, sample)
            print(f"{key}: training/tracing/scoring ...", flush=True)
            section[key] = measure(name, args, sample, taken)
            entry = section[key]
            t, r = entry["trained"], entry["random_init"]
            print(f"{key}: eval loss {entry['training']['eval_loss']:.3f}; layer 0 of {t['experts']} experts: "
                  f"2x {t['specialised']} (null {t['expected_under_null']}) significant {t['significant']} "
                  f"explainable {t['explainable']} | random-init 2x {r['specialised']} "
                  f"(null {r['expected_under_null']}) significant {r['significant']} "
                  f"explainable {r['explainable']} -> {'LEARNED' if entry['learned'] else 'not above random init'}",
                  flush=True)
            # read again before writing: two sweeps (--only ...) may run side by side on one file
            latest = read_result(args.output)
            latest.pop("machine", None)
            latest.setdefault("monet_configurations", {}).update({"about": section["about"], key: entry})
            write_result(args, latest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
