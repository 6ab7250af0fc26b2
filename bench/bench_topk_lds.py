"""Paper 000 Insight 1 at small scale: more active experts per token -> lower LDS?

Takes a small trained demo MoE (OLMoE family, 8 experts, trained top-2): the demo's cached
``$MOETOOLS_HOME/models/moe`` when complete, else a smaller copy of that recipe trained here with
monet-train (d=128, 2 layers, seq 128; ``--max-minutes`` caps it, the machine is shared and slow).
Then for k = 1, 2, 4, side by side in one run, on the validation corpus::

    moe-trace MODEL validation.jsonl --top-k k | moe-sample | moe-explain --backend offline
    moe-score samples --labels labels.jsonl --backend embedding          # offline scorer

and writes LDS per layer (000 eq. 5: mean EMS over the layer's experts, EMS = 000 eq. 3 on the
10 + 10 held-out samples) beside the shuffled-label baseline (each expert judged with a label of
another expert of its layer) and the chance levels of the design, to bench/results/topk_lds.json.
The labels come from the offline explainer and the verdicts from the embedding scorer
(all-MiniLM-L6-v2): no LLM is involved, so the figures are those of the offline pipeline, not of
paper 000's GPT-4o-mini scorer.

    .venv/bin/python bench/bench_topk_lds.py [--ks 1,2,4] [--max-minutes 8] [--max-length 128] [--holdout 10]
    .venv/bin/python bench/bench_topk_lds.py --quick   # k = 1, 2; at most 60 steps / 2 minutes of training

It needs the project corpus (``moetools corpus build``, in ``$MOETOOLS_HOME/corpus``) and the embedding
scorer's model.

Steps whose output exists are reused (a rerun with another ``--holdout`` traces nothing again); the
results file keeps one entry per held-out design under ``designs``.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _harness import ROOT, measure, parser, read_result, write_result

HOME = Path(os.environ.get("MOETOOLS_HOME") or ROOT / ".moetools")
WORK = HOME / "bench_topk_lds"
# the demo's "moe" recipe (moetools/demo/run.py DEFAULT_RECIPES) made smaller so a few hundred steps fit here
TRAIN_ARGS = ["--arch", "moe", "--lr", "1e-3", "--d-model", "128", "--layers", "2", "--seq-len", "128",
              "--batch-size", "8"]


def shell(line: str) -> float:
    """Run one pipeline (bash -o pipefail, the venv's tools first on PATH); its wall time in seconds."""
    print(f"$ {line}", file=sys.stderr, flush=True)
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), str(ROOT / "bin"),
                                                  os.environ.get("PATH", "")])}
    started = time.perf_counter()
    done = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=ROOT, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_topk_lds: step failed (exit {done.returncode}): {line}")
    return time.perf_counter() - started


def complete(directory: Path) -> bool:
    """monet-train writes the weights and training_metadata.json last: both present = finished."""
    return (directory / "model.safetensors").is_file() and (directory / "training_metadata.json").is_file()


def ensure_model(steps: int, max_minutes: float) -> Path:
    cached = HOME / "models" / "moe"
    if complete(cached):
        return cached
    model = WORK / "model"
    if not complete(model):
        tokenizer = ["--tokenizer", str(cached)] if (cached / "tokenizer.json").is_file() else []
        resume = ["--resume"] if (model / "checkpoint").is_dir() else []
        args = [*TRAIN_ARGS, "--data", str(HOME / "corpus" / "train.jsonl"), "-o", str(model), *tokenizer,
                "--steps", str(steps), "--max-minutes", f"{max_minutes:g}", "--eval-every", str(max(1, steps // 3)),
                "--checkpoint-every", str(max(1, steps // 3)), *resume]
        shell("monet-train " + " ".join(shlex.quote(a) for a in args))
    return model


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def step(output: Path, line: str) -> float | None:
    """Run ``line`` unless ``output`` exists (the tools write atomically: present = complete); None = reused."""
    return None if output.is_file() else shell(line)


def run_k(model: Path, corpus: Path, k: int, max_length: int, holdout: int) -> dict:
    """trace -> sample -> explain (offline) -> score (embedding) with the routers' k forced to ``k``.

    ``holdout`` held-out positives and as many negatives per expert (paper 002: 10 + 10).
    """
    out = WORK / (f"k{k}" if holdout == 10 else f"k{k}_holdout{holdout}")
    out.mkdir(parents=True, exist_ok=True)
    trace = WORK / f"k{k}" / "trace.msgpack.zst"  # one trace per k, whatever the holdout design
    trace.parent.mkdir(parents=True, exist_ok=True)
    q = {name: shlex.quote(str(out / name)) for name in ("samples.msgpack.zst", "labels.jsonl", "judged.scores.jsonl")}
    q["trace"] = shlex.quote(str(trace))
    times = {
        "trace_s": step(trace, f"moe-trace -q {shlex.quote(str(model))} {shlex.quote(str(corpus))} --top-k {k} "
                               f"--max-length {max_length} -o {q['trace']}"),
        "sample_s": step(out / "samples.msgpack.zst",
                         f"moe-sample -q {q['trace']} --holdout-positive {holdout} --holdout-negative {holdout} "
                         f"-o {q['samples.msgpack.zst']}"),
        "explain_s": step(out / "labels.jsonl",
                          f"moe-explain -q {q['samples.msgpack.zst']} --backend offline -o {q['labels.jsonl']}"),
        "score_s": step(out / "judged.scores.jsonl",
                        f"moe-score -q {q['samples.msgpack.zst']} --labels {q['labels.jsonl']} --backend embedding "
                        f"--positives {holdout} --negatives {holdout} -o {q['judged.scores.jsonl']}"),
    }
    records = read_jsonl(out / "judged.scores.jsonl")
    header = records[0]
    experts = [r for r in records if r.get("type") == "expert"]
    layers = []
    for layer in (r for r in records if r.get("type") == "layer"):
        mine = [r for r in experts if r["layer"] == layer["layer"] and r.get("ems") is not None]
        ems = [r["ems"] for r in mine]
        shuffled = [r["ems_shuffled"] for r in mine if r.get("ems_shuffled") is not None]
        layers.append({
            "layer": layer["layer"], "experts_judged": layer["experts"],
            "lds": layer["lds"], "lds_shuffled": layer["lds_shuffled"],
            "lds_minus_shuffled": None if layer["lds"] is None or layer["lds_shuffled"] is None
            else layer["lds"] - layer["lds_shuffled"],
            "ems_sd": statistics.stdev(ems) if len(ems) > 1 else None,
            "ems_shuffled_sd": statistics.stdev(shuffled) if len(shuffled) > 1 else None,
            "f1": statistics.fmean([r["f1"] for r in mine if r.get("f1") is not None] or [float("nan")]),
            "balanced_accuracy": statistics.fmean([r["balanced_accuracy"] for r in mine
                                                   if r.get("balanced_accuracy") is not None] or [float("nan")]),
        })
    labels = read_jsonl(out / "labels.jsonl")
    return {"k": k, "top_k_in_trace_header": header.get("top_k"), "layers": layers,
            "chance": header.get("chance"), "scorer": header.get("scorer"), "source": header.get("source"),
            "labels": len([r for r in labels if r.get("type") not in ("header", "end")]),
            "summary": next((r for r in records if r.get("type") == "end"), {}).get("summary"), "seconds": times}


def training_summary(model: Path, metadata: dict) -> dict:
    """How far monet-train got, and the last held-out loss of its log (ln 4096 = 8.32 untrained)."""
    summary = {k: metadata.get(k) for k in ("steps", "steps_planned", "finished", "tokens", "elapsed_s")}
    log = model / "train_log.jsonl"
    evals = [r for r in read_jsonl(log) if r.get("type") == "eval"] if log.is_file() else []
    if evals:
        summary["eval_loss"] = evals[-1].get("eval_loss")
        summary["eval_loss_by_domain"] = evals[-1].get("eval_loss_by_domain")
    return summary


def main() -> None:
    options = parser(__doc__, "topk_lds")  # --quick: k = 1, 2; at most 60 steps / 2 minutes of training
    options.add_argument("--ks", default=None, help="1,2,4 (--quick: 1,2)")
    options.add_argument("--steps", type=int, default=None, help="300 (--quick: 60)")
    options.add_argument("--max-minutes", type=float, default=None, help="8 (--quick: 2)")
    options.add_argument("--max-length", type=int, default=128)
    options.add_argument("--holdout", type=int, default=10,
                         help="held-out positives and negatives per expert (paper 002: 10 + 10)")
    args = options.parse_args()
    args.ks = args.ks or ("1,2" if args.quick else "1,2,4")
    args.steps = args.steps or (60 if args.quick else 300)
    args.max_minutes = args.max_minutes or (2.0 if args.quick else 8.0)
    WORK.mkdir(parents=True, exist_ok=True)
    model = ensure_model(args.steps, args.max_minutes)
    corpus = HOME / "corpus" / "validation.jsonl"
    metadata = json.loads((model / "training_metadata.json").read_text())
    config = json.loads((model / "config.json").read_text())
    with measure() as cost:
        runs = [run_k(model, corpus, int(k), args.max_length, args.holdout) for k in args.ks.split(",")]
    table = {str(run["k"]): {str(layer["layer"]): {"lds": layer["lds"], "lds_shuffled": layer["lds_shuffled"]}
                             for layer in run["layers"]} for run in runs}
    mean_lds = {str(run["k"]): statistics.fmean([layer["lds"] for layer in run["layers"]]) for run in runs}
    mean_shuffled = {str(run["k"]): statistics.fmean([layer["lds_shuffled"] for layer in run["layers"]])
                     for run in runs}
    design = {"lds_by_k_and_layer": table, "mean_lds_by_k": mean_lds, "mean_lds_shuffled_by_k": mean_shuffled,
              "runs": runs, "pipelines": cost}
    previous = read_result(args.output)
    designs = previous.get("designs", {}) if previous.get("model", {}).get("path") == str(model) else {}
    designs[f"{args.holdout}+{args.holdout}"] = design  # one entry per held-out design, kept across runs
    result = {
        "claim": "paper 000 Insight 1: more active experts per token -> lower LDS",
        "pipeline": "moe-trace --top-k k | moe-sample | moe-explain --backend offline | "
                    "moe-score --backend embedding (offline scorer, all-MiniLM-L6-v2); no LLM",
        "model": {"path": str(model), "model_type": config.get("model_type"), "hidden_size": config.get("hidden_size"),
                  "layers": config.get("num_hidden_layers"), "num_experts": config.get("num_experts"),
                  "trained_top_k": config.get("num_experts_per_tok"), "vocab_size": config.get("vocab_size"),
                  "training": training_summary(model, metadata)},
        "corpus": str(corpus), "max_length": args.max_length,
        "designs": designs,
        "caveats": [
            ("LDS here = mean EMS of offline-explainer labels (token statistics, no LLM) judged by the embedding "
            "scorer, not paper 000's LLM explainer and GPT-4o-mini scorer"),
            "a tiny, briefly trained model (see model.training: eval loss vs ln 4096 = 8.32 untrained)",
            ("8 experts x 2 layers per k: a layer's LDS is a mean over 8 experts (its standard error is about "
            "ems_sd / sqrt(8))"),
            ("the model was trained with top-2: k = 1 and k = 4 run it off its training distribution; k changes "
            "both the forward and which tokens count as positives (an expert fires on ~k/8 of the tokens)"),
        ],
    }
    write_result(args, result, quiet=True)
    print(json.dumps({"mean_lds_by_k": mean_lds, "mean_lds_shuffled_by_k": mean_shuffled, "table": table}, indent=2))


if __name__ == "__main__":
    main()
