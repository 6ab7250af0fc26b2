"""Do the trained models' experts specialise by domain more than a random-init copy's?

For each model directory: trace a per-domain sample of the corpus's validation
split with moe-trace, build a random-init copy of the same config (same
tokenizer, seed fixed) and trace it the same way, then compute, from the two
`trace` streams only (moetools.score.specialisation):

- the share of each domain's routing mass held by its top-k experts per layer
  (k = the model's top-k), and the gap to the share the same experts hold of the
  other domains' mass;
- the number of experts whose mean routing probability on one domain is >= 2x
  the runner-up domain's (paper 004 §5.1).

Prints trained vs random side by side with their ratio, and writes everything
to bench/results/specialisation.json. No trained model is "more specialised"
unless both its skewed-expert count and its top-share gap exceed the random
copy's: the verdict line says so plainly either way.

    .venv/bin/python bench/bench_specialisation.py                   # models under $MOETOOLS_HOME/models
    .venv/bin/python bench/bench_specialisation.py --model DIR --corpus corpus/validation.jsonl
    .venv/bin/python bench/bench_specialisation.py --quick           # 3000 tokens per domain
    .venv/bin/python bench/bench_specialisation.py --traces NAME TRAINED.msgpack.zst RANDOM.msgpack.zst
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from _harness import ROOT as REPO
from _harness import measured_python, parser, read_result, write_result

from moetools.demo import balanced_slice
from moetools.score.specialisation import (
    compare_reports,
    random_init_copy,
    routing_from_stream,
    specialisation_report,
)


def home() -> Path:
    return Path(os.environ.get("MOETOOLS_HOME", REPO / ".moetools"))


def find_models(root: Path) -> list[Path]:
    """Model directories (holding config.json) directly under ``root``."""
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if (path / "config.json").is_file())


def trace(model_dir: Path, corpus: Path, out: Path, max_length: int, device: str = "cpu") -> float:
    """Run moe-trace in a fresh process (bench/_harness.py); returns its wall time."""
    code = "import sys; from moetools.cli.trace import command; command.main(args=sys.argv[1:])"
    done = measured_python(["-c", code, str(model_dir), str(corpus), "--max-length", str(max_length),
                            "--device", device, "-o", str(out), "-q"], check=False)
    if done["returncode"] != 0:
        raise SystemExit(f"bench_specialisation: moe-trace failed on {model_dir} (exit {done['returncode']}):\n"
                         f"{done['stderr'].strip()}")
    return done["wall_s"]


TRAINING_KEYS = ("arch", "steps", "steps_planned", "finished", "tokens", "elapsed_s", "device", "parameters",
                 "last_eval")


def training_of(model_dir: Path) -> dict | None:
    """What monet-train says about how the model was trained (training_metadata.json), if anything."""
    try:
        metadata = json.loads((model_dir / "training_metadata.json").read_text())
    except (OSError, ValueError):
        return None
    return {key: metadata[key] for key in TRAINING_KEYS if key in metadata}


def report_of(trace_path: Path, top_k: int | None, ratio: float) -> dict:
    with open(trace_path, "rb") as handle:
        routing, header = routing_from_stream(handle)
    k = top_k or header.get("top_k") or (header.get("model") or {}).get("top_k") or 1
    report = specialisation_report(routing, k=int(k), ratio=ratio)
    report["model"] = header.get("model")
    return report


def print_comparison(name: str, trained: dict, random: dict, comparison: dict) -> None:
    def fmt(value):
        return "n/a" if value is None else f"{value:.3g}"

    print(f"\n{name}: {trained['layers']} MoE layers x {trained['experts_per_layer']} experts, "
          f"k={trained['top_expert_share']['k']}, tokens per domain {trained['tokens']}")
    print(f"  {'figure':44s} {'trained':>10s} {'random':>10s} {'ratio':>8s}")
    rows = [("top-k share of a domain's routing mass", "top_share"),
            ("gap: own top-k share - other domains' share", "top_share_gap"),
            ("experts with p(domain) >= 2x runner-up", "skewed_experts")]
    for label, key in rows:
        entry = comparison[key]
        print(f"  {label:44s} {fmt(entry['trained']):>10s} {fmt(entry['random']):>10s} {fmt(entry['ratio']):>8s}")
    print(f"  {'uniform router top-k share':44s} {fmt(trained['top_expert_share']['uniform']):>10s}")
    print("  skewed experts by domain (trained / random): " + ", ".join(
        f"{d} {trained['skewed_experts']['by_domain'].get(d, 0)}/{random['skewed_experts']['by_domain'].get(d, 0)}"
        for d in trained["tokens"]))
    verdict = ("MORE specialised than its random-init copy" if comparison["more_specialised_than_random"]
               else "NOT more specialised than its random-init copy (a finding, not hidden)")
    print(f"  verdict: {verdict}")


def main(argv=None) -> int:
    made = parser(__doc__, "specialisation")  # --quick: 3000 tokens per domain
    made.add_argument("--model", action="append", type=Path, default=[],
                        help="trained model directory (repeatable; default: every model under $MOETOOLS_HOME/models)")
    made.add_argument("--corpus", type=Path, default=None,
                        help="validation split (default: $MOETOOLS_HOME/corpus/validation.jsonl)")
    made.add_argument("--traces", nargs=3, action="append", default=[], metavar=("NAME", "TRAINED", "RANDOM"),
                        help="use two existing trace streams instead of tracing (repeatable)")
    made.add_argument("--tokens-per-domain", type=int, default=20000,
                        help="validation tokens per domain to trace (corpus regex tokens)")
    made.add_argument("--max-length", type=int, default=256, help="tokens per traced window")
    made.add_argument("--top-k", type=int, default=None, help="k of the top-expert share (default: model top-k)")
    made.add_argument("--ratio", type=float, default=2.0, help="skew criterion (paper 004: 2)")
    made.add_argument("--seed", type=int, default=0, help="seed of the random-init copies")
    made.add_argument("--device", default="cpu", help="moe-trace --device (cpu, cuda)")
    args = made.parse_args(argv)
    per_domain = 3000 if args.quick else args.tokens_per_domain

    pairs: list[tuple[str, Path, Path]] = [(name, Path(a), Path(b)) for name, a, b in args.traces]
    models = args.model or ([] if pairs else find_models(home() / "models"))
    not_models = [str(model) for model in models if not (model / "config.json").is_file()]
    if not_models:
        print(f"bench_specialisation: not a model directory (no config.json): {', '.join(not_models)}",
              file=sys.stderr)
        return 2
    if not models and not pairs:
        print(f"bench_specialisation: no trained models under {home() / 'models'} and no --model/--traces: "
              "nothing measured (train them first, e.g. `make models`)")
        return 0
    results = {"ratio": args.ratio, "tokens_per_domain": per_domain, "max_length": args.max_length, "models": {}}
    with tempfile.TemporaryDirectory(prefix="bench_specialisation_") as scratch:
        scratch = Path(scratch)
        if models:
            corpus = args.corpus or home() / "corpus" / "validation.jsonl"
            if not corpus.is_file():
                print(f"bench_specialisation: no corpus at {corpus}: run `moetools corpus build` first",
                      file=sys.stderr)
                return 2
            sample = scratch / "sample.jsonl"
            results["corpus_tokens_per_domain"] = balanced_slice(corpus, per_domain, sample)
            results["corpus"] = str(corpus)
            for model in models:
                random_dir = random_init_copy(model, scratch / f"{model.name}-random", args.seed)
                trained_trace, random_trace = scratch / f"{model.name}.msgpack.zst", scratch / f"{model.name}-r.zst"
                seconds = trace(model, sample, trained_trace, args.max_length, args.device)
                trace(random_dir, sample, random_trace, args.max_length, args.device)
                pairs.append((model.name, trained_trace, random_trace))
                results.setdefault("trace_seconds", {})[model.name] = round(seconds, 2)
                results.setdefault("model_dirs", {})[model.name] = {"path": str(model), "training": training_of(model)}
        for name, trained_path, random_path in pairs:
            trained = report_of(trained_path, args.top_k, args.ratio)
            random = report_of(random_path, args.top_k or trained["top_expert_share"]["k"], args.ratio)
            comparison = compare_reports(trained, random)
            print_comparison(name, trained, random, comparison)
            training = results.get("model_dirs", {}).get(name, {}).get("training")
            if training:
                print(f"  trained for {training.get('steps')} steps ({training.get('tokens')} tokens, "
                      f"{training.get('elapsed_s', 0) / 60:.1f} min on {training.get('device')}, "
                      f"finished as planned: {training.get('finished')})")
            results["models"][name] = {"comparison": comparison, "training": training, "trained": trained,
                                       "random": random}
    previous = read_result(args.output).get("monet_configurations")  # bench_monet_specialisation.py's sweep
    if previous:
        results["monet_configurations"] = previous
    write_result(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
