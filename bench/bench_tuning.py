"""Replication: tune chosen experts vs full vs random experts on a demo-scale MoE.

Base: a top-k MoE (transformers OLMoE) with 32 experts per layer, top-4, ``--d-model`` (64), 2 layers,
expert intermediate 64, vocabulary 1024, trained here with monet-train on the project corpus
(``.moetools/corpus``, ``moetools corpus build``) for ``--base-steps`` steps at batch 8 x ``--seq-len``
(64). The demo's own MoE has 8 experts, too few to choose 8 from.

Tuning: the corpus's medical training split, the same budget for every mode (``--steps`` x batch 8 x
``--seq-len`` tokens; das-two-stage splits it in half), lr 1e-3. Expert sets, m = 8 of 32 per layer, chosen on
the base model: DAS-top-m (paper 003 eq. 1, medical vs general training text), routing-top-m (mean
routing probability on medical text: the "direct routing score" of 003 Table 5, a stand-in for AF,
000 eq. 6), random-m (seeded). EDMRS needs LLM labels (moe-explain + moe-score) and is not run here.

Figures: validation loss per domain (the corpus's validation split) of the base and of every
tuned model, the change against the base, trainable parameters, wall time, CPU time, peak RSS
(``VmHWM`` of the run's own process, ``bench/_harness.py``);
RC (003 eq. 4-5) of the attention+router model and of the experts-only model against the base,
on medical validation text.

    .venv/bin/python bench/bench_tuning.py          # -> bench/results/tuning.json
    .venv/bin/python bench/bench_tuning.py --quick  # base 30 steps, 6 tuning steps, full / experts-das / random
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import ROOT, measured_python, parser, write_result

EXPERTS, TOP_K, CHOSEN = 32, 4, 8


def split_corpus(corpus: Path, out: Path) -> dict:
    """medical/general training files and one validation file per domain."""
    files = {}
    train = [json.loads(line) for line in (corpus / "train.jsonl").open(encoding="utf-8")]
    for domain in ("medical", "general"):
        path = out / f"train-{domain}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in train if r["domain"] == domain))
        files[f"train-{domain}"] = path
    validation = [json.loads(line) for line in (corpus / "validation.jsonl").open(encoding="utf-8")]
    for domain in sorted({r["domain"] for r in validation}):
        path = out / f"{domain}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in validation if r["domain"] == domain))
        files[domain] = path
    (out / "all-train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    return files


def train_base(out: Path, steps: int, d_model: int, seq_len: int) -> Path:
    config = out / "moe.json"
    config.write_text(json.dumps({"num_experts": EXPERTS, "num_experts_per_tok": TOP_K, "intermediate_size": 64}))
    base = out / "base"
    subprocess.run([sys.executable, "-m", "moetools.train", "--arch", "moe", "--config", str(config),
                    "--data", str(out / "all-train.jsonl"), "-o", str(base), "--d-model", str(d_model), "--layers", "2",
                    "--heads", "4", "--steps", str(steps), "--batch-size", "8", "--seq-len", str(seq_len),
                    "--vocab-size", "1024", "--lr", "2e-3", "--eval-every", "1000", "--checkpoint-every", "100000",
                    "-q"], check=True)
    return base


def choose(base: Path, files: dict, out: Path, seq_len: int) -> dict:
    """experts.json files: das, routing, random (m per layer, on the base model)."""
    from moetools.models import model_identity
    from moetools.models.loader import load_model
    from moetools.select import ExpertSet, write_experts
    from moetools.tune import das as das_lib
    from moetools.tune.data import load_examples

    model, tokenizer, adapter = load_model(base, dtype="float32")
    identity = model_identity(model, adapter, base)
    medical = load_examples(files["train-medical"], tokenizer, seq_len)
    general = load_examples(files["train-general"], tokenizer, seq_len)
    s_medical = das_lib.routing_sums(model, adapter, medical, max_rows=128)
    s_general = das_lib.routing_sums(model, adapter, general, max_rows=128)
    das = das_lib.domain_advantage(s_medical, s_general)
    layers = [layer.index for layer in adapter.moe_layers()]
    rng = random.Random(0)
    sets = {"das": das_lib.top_experts(das, CHOSEN),
            "routing": das_lib.top_experts(s_medical[0] / s_medical[1], CHOSEN),
            "random": [sorted(rng.sample(range(EXPERTS), CHOSEN)) for _ in layers]}
    paths = {}
    for name, ids in sets.items():
        paths[name] = out / f"experts-{name}.json"
        write_experts(paths[name], ExpertSet(experts=dict(zip(layers, ids)), model=identity,
                                             provenance={"criterion": {"by": name, "top": CHOSEN}}))
    return {"paths": paths, "sets": {k: {str(layer): v for layer, v in zip(layers, ids)} for k, ids in sets.items()},
            "cdas_base": das_lib.cumulative_das(das, CHOSEN)}


def run_mode(name: str, base: Path, files: dict, out: Path, steps: int, seq_len: int, **extra) -> dict:
    """One tuning run in a child process (its own peak RSS); returns its summary + validation losses."""
    args = {"model": str(base), "data": str(files["train-medical"]), "output": str(out / name), "steps": steps,
            "batch_size": 8, "seq_len": seq_len, "lr": 1e-3, "eval_every": 100_000, "checkpoint_every": 100_000,
            "eval": [str(files[d]) for d in ("code", "general", "legal", "medical", "offensive")],
            "eval_batches": 64, **extra}
    script = ("import json,sys; from moetools.tune.loop import TuneOptions, Tuner; "
              "t = Tuner(TuneOptions(**json.loads(sys.argv[1]))); print(json.dumps(t.run()))")
    done = measured_python(["-c", script, json.dumps(args)])
    summary = json.loads(done["stdout"].strip().splitlines()[-1])
    summary.update(wall_s=round(done["wall_s"], 1), cpu_s=round(done["cpu_s"], 1), peak_rss_mb=done["peak_rss_mb"])
    return summary


def base_losses(base: Path, files: dict, out: Path, seq_len: int) -> dict:
    """Validation losses of the untouched base (a zero-step evaluation through the same code)."""
    from moetools.tune.loop import TuneOptions, Tuner

    tuner = Tuner(TuneOptions(model=str(base), data=str(files["train-medical"]), output=str(out / "base-eval"),
                              mode="attention-router", steps=1, batch_size=8, seq_len=seq_len, eval_batches=64,
                              eval=[str(files[d]) for d in ("code", "general", "legal", "medical", "offensive")]))
    tuner.enter_stage(0)
    return tuner.evaluate()


def routing_on(model_dir_or_tuned, files: dict, seq_len: int):
    from moetools.models.loader import load_model
    from moetools.tune import das as das_lib
    from moetools.tune.data import load_examples

    model, tokenizer, adapter = load_model(model_dir_or_tuned, dtype="float32")
    medical = load_examples(files["medical"], tokenizer, seq_len)
    return das_lib.mean_routing(model, adapter, medical)


def main() -> None:
    options = parser(__doc__, "tuning")  # --quick: base 30 steps, 6 tuning steps, three modes
    options.add_argument("--corpus", default=str(ROOT / ".moetools" / "corpus"))
    options.add_argument("--base-steps", type=int, default=None, help="150 (--quick: 30)")
    options.add_argument("--steps", type=int, default=None, help="30 (--quick: 6)")
    options.add_argument("--d-model", type=int, default=64)
    options.add_argument("--seq-len", type=int, default=64)
    options.add_argument("--modes", default=None, help="comma-separated (default: all; --quick: full,experts-das,"
                                                       "experts-random)")
    args = options.parse_args()
    args.base_steps = args.base_steps or (30 if args.quick else 150)
    args.steps = args.steps or (6 if args.quick else 30)
    args.modes = args.modes or ("full,experts-das,experts-random" if args.quick else
                                "full,experts-das,experts-routing,experts-random,das-two-stage,attention-router,lora,"
                                "lora-experts-das")
    from moetools.tune import das as das_lib
    from moetools.tune import merge

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        files = split_corpus(Path(args.corpus), out)
        started = time.monotonic()
        base = train_base(out, args.base_steps, args.d_model, args.seq_len)
        base_s = round(time.monotonic() - started, 1)
        chosen = choose(base, files, out, args.seq_len)
        reference = base_losses(base, files, out, args.seq_len)
        half = args.steps // 2
        plan = {
            "full": {"mode": "full"},
            "experts-das": {"mode": "experts", "experts": str(chosen["paths"]["das"])},
            "experts-routing": {"mode": "experts", "experts": str(chosen["paths"]["routing"])},
            "experts-random": {"mode": "experts", "experts": str(chosen["paths"]["random"])},
            "das-two-stage": {"mode": "das-two-stage", "general": str(files["train-general"]), "top": CHOSEN,
                              "stage1_steps": half, "das_rows": 128, "steps_override": args.steps - half},
            "attention-router": {"mode": "attention-router"},
            "lora": {"mode": "lora"},
            "lora-experts-das": {"mode": "lora-experts", "experts": str(chosen["paths"]["das"])},
        }
        runs = {}
        wanted = args.modes.split(",")
        for name, extra in plan.items():
            if name not in wanted:
                continue
            steps = extra.pop("steps_override", args.steps)
            runs[name] = run_mode(name, base, files, out, steps, args.seq_len, **extra)
            print(name, runs[name]["last_eval"]["eval_loss_by_domain"], file=sys.stderr)
        # RC (003 eq. 4-5) on medical validation text: attention+router vs experts-only, against the base
        before = routing_on(base, files, args.seq_len)
        rc = {}
        for name in ("attention-router", "experts-das", "das-two-stage"):
            if name in runs:
                merge(out / name, out / f"merged-{name}")
                rc[name] = das_lib.routing_consistency(before, routing_on(out / f"merged-{name}", files,
                                                                          args.seq_len))
    table = {}
    for name, summary in runs.items():
        losses = summary["last_eval"]["eval_loss_by_domain"]
        table[name] = {"medical_loss": round(losses["medical"], 4),
                       "medical_change": round(losses["medical"] - reference["eval_loss_by_domain"]["medical"], 4),
                       "other_domains_change": {d: round(v - reference["eval_loss_by_domain"][d], 4)
                                                for d, v in losses.items() if d != "medical"},
                       "mean_other_change": round(sum(v - reference["eval_loss_by_domain"][d] for d, v in losses.items()
                                                      if d != "medical") / (len(losses) - 1), 4),
                       "trainable_parameters": summary["trainable_parameters"], "wall_s": summary["wall_s"],
                       "cpu_s": summary["cpu_s"],
                       "peak_rss_mb": round(summary["peak_rss_mb"], 1), "cdas": summary.get("cdas")}
    report = {"bench": "tuning",
              "base": {"arch": "OLMoE (monet-train --arch moe)", "experts": EXPERTS, "top_k": TOP_K,
                       "d_model": args.d_model, "layers": 2, "steps": args.base_steps, "batch": f"8 x {args.seq_len}", "train_s": base_s,
                       "validation_loss": {d: round(v, 4) for d, v in reference["eval_loss_by_domain"].items()}},
              "tuning": {"data": "corpus train split, domain medical", "steps": args.steps,
                         "batch": f"8 x {args.seq_len}", "lr": 1e-3, "chosen_per_layer": CHOSEN, "sets": chosen["sets"],
                         "cdas_at_8_base": round(chosen["cdas_base"], 4)},
              "results": table, "routing_consistency": {k: float(f"{v:.3e}") for k, v in rc.items()},
              "not_run": "EDMRS-top-m (needs LLM labels of every expert: moe-explain + moe-score)"}
    write_result(args, report, quiet=True)
    print(json.dumps({k: (v["medical_change"], v["mean_other_change"]) for k, v in table.items()}, indent=1))


if __name__ == "__main__":
    main()
