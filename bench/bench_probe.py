"""Paper 002's k-sparse probing replication, small: MoE expert neurons vs dense FFN neurons, best-layer F1 vs k.

Trains (once, cached under .moetools/bench_probe/) a top-k MoE (``monet-train --arch moe``: 8 experts,
top-2) and the matched dense model (``--arch llama``: same attention, embeddings, width, depth,
vocabulary, tokenizer, data, steps, batch and seed; SwiGLU MLP with the same *active* parameters,
moetools/train/models.py), then runs ``moe-probe neurons`` on held-out documents for both, with
real and shuffled labels (the chance-level control). Records test F1 of the best layer/expert per
concept and k, the mean over the concepts probed in both models, probing seconds per 100k tokens
and the probing process's peak RSS (2 CPU cores, shared).

    .venv/bin/python bench/bench_probe.py [--steps 150] [--probe-docs 400]
    .venv/bin/python bench/bench_probe.py --quick    # 40 steps, 600 training and 80 probe documents

It needs the project corpus (``moetools corpus build``, in ``.moetools/corpus``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _harness import ROOT, measured_python, parser, write_result

BIN = ROOT / ".venv" / "bin"
CORPUS = ROOT / ".moetools" / "corpus"
WORK = ROOT / ".moetools" / "bench_probe"
NOTES = [
    ("Both models are tiny (d=64, 2 layers) and briefly trained (same data, steps, batch, lr, seed, tokenizer); "
    "eval losses are close (see eval_loss), so neither is a converged LM: a small-scale check, not 002's setting."),
    ("MoE 'best' is the best of 2 layers x 8 experts (16 candidates), dense of 2 layers: more candidates can "
    "help MoE even though the choice uses training F1 only and the figure is the test F1."),
    ("An expert probe sees only the tokens routed to that expert (002's protocol), a narrower population than "
    "a dense layer's; positives per expert are fewer, and 'few-examples' skips are counted per model."),
    "MoE experts have 48 hidden units, so k=64 exists only for the dense model (88 units).",
    "Shuffled-label control: each token gets the labels of a random token of its batch; F1 there is chance.",
]
SHAPE = ["--d-model", "64", "--layers", "2", "--heads", "4", "--moe-experts", "16", "--moe-dim", "8"]


def run(args: list[str]) -> None:
    subprocess.run(args, check=True, cwd=ROOT)


def head(source: Path, target: Path, lines: int) -> Path:
    with open(source, encoding="utf-8") as reader, open(target, "w", encoding="utf-8") as writer:
        for number, line in enumerate(reader):
            if number >= lines:
                break
            writer.write(line)
    return target


def train(arch: str, data: Path, steps: int, tokenizer: Path | None) -> Path:
    out = WORK / f"{arch}-{steps}"
    if (out / "model.safetensors").exists():
        return out
    args = [str(BIN / "monet-train"), "--data", str(data), "-o", str(out), "--arch", arch, *SHAPE,
            "--vocab-size", "2000", "--steps", str(steps), "--batch-size", "8", "--seq-len", "128",
            "--lr", "3e-3", "--seed", "0", "--eval-every", str(steps), "-q"]
    if tokenizer is not None:
        args += ["--tokenizer", str(tokenizer)]
    run(args)
    return out


def final_loss(model: Path) -> float | None:
    losses = [json.loads(line) for line in (model / "train_log.jsonl").read_text().splitlines()]
    evals = [row["eval_loss"] for row in losses if row.get("type") == "eval"]
    return evals[-1] if evals else None


def probe(model: Path, corpus: Path, out: Path, shuffled: bool) -> tuple[list[dict], dict, float, float]:
    """(records, end summary, seconds, peak RSS MiB of this probing process)."""
    code = "import sys; from moetools.cli.probe import command; command.main(args=sys.argv[1:])"
    args = ["-c", code, "neurons", str(model), str(corpus), "-o", str(out), "-q"]
    if shuffled:
        args.append("--shuffle-labels")
    done = measured_python(args, check=False)  # this process's own peak RSS (bench/_harness.py)
    if done["returncode"]:
        raise subprocess.CalledProcessError(done["returncode"], args, stderr=done["stderr"])
    seconds, peak = done["wall_s"], done["peak_rss_mb"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    end = rows[-1]
    return rows[1:-1], end.get("summary", {}), seconds, peak


def best_f1(records: list[dict]) -> dict:
    """{concept: {k: test F1 of the best layer/expert}}."""
    table: dict = {}
    for record in records:
        if record["type"] == "best":
            table.setdefault(record["concept"], {})[str(record["k"])] = record["test_f1"]
    return table


def mean_curve(table: dict, concepts: list[str]) -> dict:
    ks = sorted({int(k) for concept in concepts for k in table.get(concept, {})})
    return {str(k): round(sum(table[c][str(k)] for c in concepts if str(k) in table[c])
                          / max(1, sum(str(k) in table[c] for c in concepts)), 4) for k in ks}


def main() -> None:
    made = parser(__doc__, "probe")  # --quick: 40 steps, 600 training and 80 probe documents
    made.add_argument("--steps", type=int, default=None, help="150 (--quick: 40)")
    made.add_argument("--train-docs", type=int, default=None, help="3000 (--quick: 600)")
    made.add_argument("--probe-docs", type=int, default=None, help="400 (--quick: 80)")
    options = made.parse_args()
    options.steps = options.steps or (40 if options.quick else 150)
    options.train_docs = options.train_docs or (600 if options.quick else 3000)
    options.probe_docs = options.probe_docs or (80 if options.quick else 400)
    WORK.mkdir(parents=True, exist_ok=True)
    data = head(CORPUS / "train.jsonl", WORK / "train.jsonl", options.train_docs)
    probe_corpus = head(CORPUS / "test.jsonl", WORK / "probe.jsonl", options.probe_docs)
    moe = train("moe", data, options.steps, None)
    dense = train("llama", data, options.steps, moe)  # the MoE's tokenizer: same vocabulary
    results: dict = {"models": {}, "probe_corpus": {"file": ".moetools/corpus/test.jsonl",
                                                    "documents": options.probe_docs}}
    for name, model in (("moe", moe), ("dense", dense)):
        entry = {"path": str(model.relative_to(ROOT)), "eval_loss": final_loss(model),
                 "config": {key: value for key, value in json.loads((model / "config.json").read_text()).items()
                            if key in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_experts",
                                       "num_experts_per_tok")}}
        for control in (False, True):
            records, summary, seconds, peak = probe(model, probe_corpus, WORK / f"{name}-{control}.jsonl", control)
            key = "shuffled" if control else "real"
            entry[key] = {"best_test_f1": best_f1(records), "summary": summary,
                          "seconds": round(seconds, 1), "peak_rss_mib": round(peak, 1),
                          "seconds_per_100k_tokens": round(seconds * 1e5 / max(1, summary.get("tokens", 0)), 1)}
        results["models"][name] = entry
    shared = sorted(set(results["models"]["moe"]["real"]["best_test_f1"])
                    & set(results["models"]["dense"]["real"]["best_test_f1"]))
    results["concepts_in_both"] = shared
    results["mean_best_test_f1"] = {
        f"{name}-{key}": mean_curve(results["models"][name][key]["best_test_f1"], shared)
        for name in ("moe", "dense") for key in ("real", "shuffled")}
    results["notes"] = NOTES
    results["steps"] = options.steps
    write_result(options, results, quiet=True)
    print(json.dumps(results["mean_best_test_f1"], indent=2))


if __name__ == "__main__":
    sys.exit(main())
