"""moe-select: an expert set (experts.json) from scores, or set algebra on expert sets (logic: ``moetools.select``)."""

from __future__ import annotations

import click

from ..errors import UsageError
from .common import FINITE_FLOAT, finite_float, output_guard, read_input, say, tool, tool_info

EXAMPLE = """\
moe-select routing.scores.jsonl --by das --domain medical --top 16 > medical.json
moe-select routing.scores.jsonl --by skew --min-ratio 2 --domain offensive > offensive.json
moe-select routing.scores.jsonl --by esft_token --domain law --cumulative 0.2 -o law.json
moe-select toxic.scores.jsonl --min-correlation 0.1 > toxic.json
moe-select routing.scores.jsonl --random 16 --seed 3 > control.json
moe-select union medical.json legal.json > both.json
moe-select complement medical.json > all-but-medical.json"""

OPERATIONS = ("union", "intersect", "minus", "complement")


@tool("moe-select", example=EXAMPLE)
@click.argument("inputs", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True), metavar="[OP] INPUT...")
@click.option("-o", "--output", default="-", show_default=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="experts.json to write; '-' is stdout. Written under a temporary name and renamed.")
@click.option("--by", default=None, metavar="METRIC",
              help="Metric of the scores stream to select by: das, af, prob, score, explen, psn, reap, "
                   "esft_token, esft_gate, skew, pearson, rc_shift, or any metric a scores stream carries.")
@click.option("--domain", default=None, help="Domain of per-domain metrics (default: the only domain).")
@click.option("--top", type=click.IntRange(0), default=None, help="The M best experts of each layer.")
@click.option("--top-total", type=click.IntRange(0), default=None, help="The M best experts over all layers.")
@click.option("--bottom", type=click.IntRange(0), default=None,
              help="The M lowest of each layer (003's unrelated experts).")
@click.option("--threshold", type=FINITE_FLOAT, default=None, help="Only experts whose value is >= X.")
@click.option("--cumulative", type=FINITE_FLOAT, default=None, metavar="P",
              help="ESFT's top-p per layer: best first until their scores sum to P (use with esft_token/esft_gate); "
                   "a signed metric (das, pearson, any negative value) is refused.")
@click.option("--min-ratio", type=FINITE_FLOAT, default=None,
              help="Skew: best domain (--domain) >= R x the runner-up (004 sec. 5.1; implies --by skew).")
@click.option("--max-q", type=finite_float(0, 1), default=None,
              help="Skew: also the permutation test's Benjamini-Hochberg q-value <= Q.")
@click.option("--min-correlation", type=FINITE_FLOAT, default=None,
              help="Pearson r >= C (004 sec. 5.2: 0.2, 0.1, 0.05; implies --by pearson).")
@click.option("--random", type=click.IntRange(0), default=None, metavar="M",
              help="M experts per layer drawn at random (the control), seeded by --seed.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --random.")
@click.option("--num-experts", type=click.IntRange(1), default=None,
              help="complement of a set without a model block (an ESFT file): experts per layer.")
@click.option("--layers", default=None, metavar="IDS",
              help="complement of a set without a model block: its MoE layers, e.g. 1-26.")
@output_guard()
def command(inputs, output, num_experts, layers, **options):
    """Turn scores into an expert set, or combine expert sets.

    Reads `scores` streams (formats/scores.md) and writes experts.json
    (formats/experts.md): ESFT's layout, {"experts": {"<layer>": [ids]},
    "shared_experts": false, "non_expert_modules": false}, plus a `moetools`
    block with the criterion, the model's identity and each selected expert's
    score. Per-domain metrics take --domain. Filters (--threshold, --min-ratio,
    --max-q, --min-correlation) apply first, then one ranking (--top,
    --top-total, --bottom, --cumulative).

    Set algebra: `moe-select union|intersect|minus A.json B.json...` and
    `moe-select complement A.json` (the model's expert count comes from the
    set's model block). Sets of different models are refused (exit 2), and
    so is an expert id or layer outside the model (its expert count and MoE
    layers, or --num-experts/--layers): named with the set, never written
    out or dropped.
    """
    from ..select import complement, intersect, minus, read_experts, union, write_experts

    if inputs and inputs[0] in OPERATIONS:
        op, paths = inputs[0], inputs[1:]
        if not paths:
            raise UsageError(f"{op} needs expert sets (experts.json files)")
        used = [name for name, value in options.items() if value is not None and name != "seed"]
        if used:
            raise UsageError(f"{op} combines sets: --{used[0].replace('_', '-')} does not apply")
        sets = [read_experts(path) for path in paths]
        if op == "complement":
            if len(sets) != 1:
                raise UsageError("complement takes one expert set")
            from .sample import parse_ids

            result = complement(sets[0], num_experts=num_experts, layers=parse_ids(layers, "layers"))
        else:
            result = {"union": union, "intersect": intersect, "minus": minus}[op](*sets)
        result.provenance["tool"] = tool_info()
        result.provenance["sources"] = [{"path": str(p)} for p in paths]
        write_experts(output, result)
        say(f"{op}: {len(result)} experts in {len(result.layers())} layers")
        return
    if num_experts is not None or layers is not None:
        raise UsageError("--num-experts and --layers are for complement")
    from ..select.criteria import Criterion, build_set, read_scores, select

    criterion = Criterion(**options)
    criterion.check()
    readers = [read_input(path, kinds="scores", validate=True) for path in (inputs or ("-",))]
    table, header = read_scores(readers, criterion)
    chosen, scores = select(table, criterion, header.get("num_experts"))
    sources = [{"path": str(path), "tool": reader.header.get("tool")} for path, reader in zip(inputs or ("-",), readers)]
    result = build_set(chosen, scores, criterion, header, tool=tool_info(), sources=sources)
    write_experts(output, result)
    say(f"selected {len(result)} experts in {len(result.layers())} of {len(chosen)} layers")


main = command.main
