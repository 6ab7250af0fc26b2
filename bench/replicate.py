"""`make replicate`: the papers' findings at a budget that can show them, over seeds, with 95% intervals.

Five replications on models trained here (per seed: one top-k MoE and one MONET-VD, the demo's recipes of
``moetools.demo.run.DEFAULT_RECIPES``, and the dense model matched to the MoE, ``--arch llama``):

1. ``lds_vs_k``              paper 000 §3.2 Insight 1: LDS vs the number of active experts (``moe-trace --top-k``)
2. ``selective_finetuning``  papers 000/003: DAS / routing-proxy / random experts vs full FT vs LoRA
3. ``sparse_probing``        paper 002: k-sparse probing, MoE experts vs the matched dense model
4. ``monet_specialisation``  paper 004 §5.1: domain specialisation beyond random init, MONET-VD vs the MoE
5. ``domain_masking``        paper 004 §5.1: masking a domain's experts, MONET-VD (and the MoE)

Each figure is measured per seed; its mean and 95% t-interval over seeds give the verdict: ``reproduced``
(the interval excludes 0 on the claimed side), ``not reproduced (null)`` (it holds 0) or ``opposite``.
Results go to bench/results/replication.json (``--quick``: replication-quick.json) and, with a full run of
all five, to the marked table of README.md (``--table`` prints it).

Everything is cached under ``$MOETOOLS_HOME/replicate/<full|quick>/``: a rerun (or a killed run started
again) trains nothing that is finished and skips every finished stage.

    .venv/bin/python bench/replicate.py                        # seeds 0,1,2 on the CPU (about an hour, 2 cores)
    .venv/bin/python bench/replicate.py --device cuda          # the same on a GPU
    .venv/bin/python bench/replicate.py --quick                # tiny models and budgets: a couple of minutes
    .venv/bin/python bench/replicate.py --only sparse_probing  # one replication (merged into the results)
    .venv/bin/python bench/replicate.py --table                # print the README table of the results file
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

from _harness import RESULTS, ROOT, machine, parser, read_result
from replication import lds, monet, probing, tuning
from replication.common import Context, eval_loss, write_json

from moetools.demo.run import ensure_corpus

REPLICATIONS = {
    "lds_vs_k": lds.replicate,
    "selective_finetuning": tuning.replicate,
    "sparse_probing": probing.replicate,
    "monet_specialisation": monet.replicate_specialisation,
    "domain_masking": monet.replicate_masking,
}
#: the models each replication needs (trained first, in this order: the MoE's tokenizer is the others')
NEEDS = {"lds_vs_k": ("moe",), "selective_finetuning": ("moe",), "sparse_probing": ("moe", "dense"),
         "monet_specialisation": ("moe", "monet-vd"), "domain_masking": ("moe", "monet-vd")}
README = ROOT / "README.md"
BEGIN, END = "<!-- replication table: begin (bench/replicate.py writes it) -->", "<!-- replication table: end -->"


def fmt(value, digits=3) -> str:
    return "–" if value is None else f"{value:+.{digits}g}"


def table(results: dict, output: str = "bench/results/replication.json") -> str:
    """One row per replication: the main figure, its mean and 95% interval over seeds, the verdict."""
    rows = ["| replication | paper | figure (claimed sign) | mean [95% CI] | seeds | verdict |",
            "|---|---|---|---|---|---|"]
    for name in REPLICATIONS:
        entry = results.get("replications", {}).get(name)
        if not entry:
            rows.append(f"| {name} | | not run | | | |")
            continue
        main = entry["main"]
        rows.append(f"| {name} | {entry['paper']} | {main['figure']} ({main['claimed_sign']}) | "
                    f"{fmt(main['mean'])} [{fmt(main['low'])}, {fmt(main['high'])}] | {main['n']} | "
                    f"**{main['verdict']}** |")
    compute = results.get("compute", {})
    losses: dict = {}
    for name, model in results.get("models", {}).items():
        if model.get("eval_loss_nats_per_token") is not None:
            losses.setdefault(name.rsplit("-seed", 1)[0], []).append(model["eval_loss_nats_per_token"])
    rows.append("")
    rows.append(f"Seeds {results.get('seeds')}, device {results.get('device')}, budget {results.get('budget')}; "
                "models' held-out loss (mean over seeds, nats/token): "
                + ", ".join(f"{arch} {sum(v) / len(v):.2f}" for arch, v in losses.items())
                + f"; compute {compute.get('wall_s', 0) / 60:.0f} min wall, {compute.get('cpu_s', 0) / 60:.0f} min "
                f"CPU ({output} has every figure per seed and the secondary claims).")
    return "\n".join(rows)


def _shown(path: Path) -> str:
    """``path`` relative to the checkout when it is inside it (the table goes into README.md)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return Path(path).name


def write_readme_table(text: str) -> bool:
    readme = README.read_text(encoding="utf-8")
    if BEGIN not in readme or END not in readme:
        return False
    block = f"{BEGIN}\n{text}\n{END}"
    README.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, readme, flags=re.DOTALL),
                      encoding="utf-8")
    return True


def main(argv=None) -> int:
    made = parser(__doc__, "replication")
    made.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N) for every tool (default cpu)")
    made.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2; at least 2 for "
                                                       "an interval)")
    made.add_argument("--only", action="append", choices=sorted(REPLICATIONS), default=[],
                      help="run only this replication (repeatable); the others stay as they are in the results")
    made.add_argument("--table", action="store_true", help="print the README table of the results file and exit")
    args = made.parse_args(argv)
    if args.quick and args.output == RESULTS / "replication.json":
        args.output = RESULTS / "replication-quick.json"
    if args.table:
        print(table(read_result(args.output), _shown(args.output)))
        return 0
    try:
        seeds = sorted({int(s) for s in args.seeds.split(",") if s.strip()})
    except ValueError:
        print(f"replicate: --seeds takes comma-separated integers, not {args.seeds!r}", file=sys.stderr)
        return 2
    if not seeds:
        print("replicate: --seeds is empty", file=sys.stderr)
        return 2
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("replicate: --device cuda but torch sees no GPU", file=sys.stderr)
            return 2
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[replicate {time.perf_counter() - started:6.0f} s] {line}", file=sys.stderr, flush=True)

    ctx = Context(args.quick, args.device, seeds, log)
    ensure_corpus(ctx.home, log)  # the demo's: built once with every source installed, else cached
    wanted = args.only or list(REPLICATIONS)
    models = [(arch, seed) for seed in seeds for arch in ("moe", "dense", "monet-vd")
              if any(arch in NEEDS[name] for name in wanted)]
    for number, (arch, seed) in enumerate(models, 1):
        log(f"model {number}/{len(models)}: {arch} seed {seed} (left after it: {len(models) - number} models, "
            f"then {len(wanted)} replications)")
        ctx.model(arch, seed)
    results = read_result(args.output) if args.only else {}
    results.setdefault("replications", {})
    for number, name in enumerate(wanted, 1):
        log(f"replication {number}/{len(wanted)}: {name} (left after it: {', '.join(wanted[number:]) or 'none'})")
        entry = REPLICATIONS[name](ctx)
        results["replications"][name] = entry
        log(f"{name}: {entry['main']['figure']} = {fmt(entry['main']['mean'])} "
            f"[{fmt(entry['main']['low'])}, {fmt(entry['main']['high'])}] -> {entry['main']['verdict']}")
    results.update({
        "command": "make replicate (bench/replicate.py " + " ".join(argv if argv is not None else sys.argv[1:]) + ")",
        "seeds": seeds, "device": args.device, "budget": ctx.budget.name, "quick": args.quick,
        "models": {f"{arch}-seed{seed}": {"eval_loss_nats_per_token": eval_loss(ctx.model(arch, seed))}
                   for arch, seed in models},
        "budget_settings": {k: v for k, v in vars(ctx.budget).items()},
        "compute": {**ctx.recorded_compute(), "this_run_wall_s": round(time.perf_counter() - started, 1),
                    "this_run_trained": ctx.trained},
        "machine": machine(),
        "interval": "mean and 95% Student t interval over seeds (t(0.975, n-1) tabulated)",
        "verdicts": "reproduced: the interval excludes 0 on the claimed side; not reproduced (null): it holds 0; "
                    "opposite: it excludes 0 on the other side",
    })
    write_json(Path(args.output), results)
    text = table(results, _shown(args.output))
    print(text)
    if not args.quick and set(results["replications"]) == set(REPLICATIONS) and os.environ.get(
            "REPLICATE_NO_README") is None and write_readme_table(text):
        log(f"README table updated ({README.name})")
    log(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
