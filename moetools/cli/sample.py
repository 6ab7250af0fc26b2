"""moe-sample: per (layer, expert) example sets from a trace (logic: ``moetools.sample``)."""

from __future__ import annotations

import click

from ..errors import UsageError
from ..sample import HARD_NEGATIVES, RANK_FIELDS, SampleOptions, sample_trace, summary_line
from .common import (
    finite_float,
    input_argument,
    open_stream_writer,
    output_guard,
    output_options,
    progress,
    read_input,
    say,
    tool,
    warn,
)

EXAMPLE = """\
moe-trace models/olmoe corpus.jsonl | moe-sample -o samples.msgpack.zst
cat shards/*.msgpack.zst | moe-sample --layers 0,4 --top 20 --seed 7 -o samples.msgpack.zst
moe-sample trace.msgpack.zst --domain medical --hard-negatives domain --format jsonl | head -c 2000"""


def parse_ids(text: str | None, what: str) -> tuple[int, ...] | None:
    """``"0,2,5-7"`` -> (0, 2, 5, 6, 7); None stays None."""
    if text is None:
        return None
    ids: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "-" in part:
                low, high = part.split("-", 1)
                ids.update(range(int(low), int(high) + 1))
            else:
                ids.add(int(part))
    except ValueError:
        raise UsageError(f"--{what} takes ids and ranges like 0,2,5-7, got {text!r}") from None
    if not ids:
        raise UsageError(f"--{what} is empty")
    return tuple(sorted(ids))


@tool("moe-sample", example=EXAMPLE)
@input_argument()
@output_options(default_format="msgpack")
@click.option("--rank", type=click.Choice(sorted(RANK_FIELDS)), default="contribution", show_default=True,
              help="Activation that ranks and weights contexts: the residual contribution g·‖E‖ (paper 002) or "
                   "the gate g.")
@click.option("--top", default=20, show_default=True, type=click.IntRange(0),
              help="Top-activated contexts per expert for the explainer (paper 002: top 20).")
@click.option("--weighted", default=20, show_default=True, type=click.IntRange(0),
              help="Importance-weighted contexts (probability ∝ activation) for the explainer.")
@click.option("--negatives", default=20, show_default=True, type=click.IntRange(0),
              help="Negative contexts (expert not selected at the marked token) for the explainer.")
@click.option("--holdout-positive", default=10, show_default=True, type=click.IntRange(0),
              help="Held-out positive contexts for the scorer (paper 002: 10).")
@click.option("--holdout-negative", default=10, show_default=True, type=click.IntRange(0),
              help="Held-out negative contexts for the scorer (paper 002: 10).")
@click.option("--context", default=32, show_default=True, type=click.IntRange(1),
              help="Tokens per context: a fixed grid of cells over each document.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of every random choice.")
@click.option("--holdout-fraction", default=0.2, show_default=True, type=finite_float(0, 1),
              help="Share of document regions reserved for the holdout sets.")
@click.option("--split-region", default=256, show_default=True, type=click.IntRange(0),
              help="Tokens per region of the explain/holdout split (a multiple of --context); 0 splits by "
                   "whole document.")
@click.option("--negative-span", default=1, show_default=True, type=click.IntRange(1),
              help="A negative's marked token and the SPAN-1 tokens before it must not route to the expert.")
@click.option("--hard-negatives", type=click.Choice(HARD_NEGATIVES), default="none", show_default=True,
              help="Match negatives to the positives' domain mix, or mark only tokens that route to the "
                   "expert elsewhere in the same trace window.")
@click.option("--layers", default=None, metavar="IDS", help="Only these model layers, e.g. 0,4-7.")
@click.option("--experts", default=None, metavar="IDS", help="Only these expert ids, e.g. 0-15.")
@click.option("--domain", default=None, help="Only sequences whose meta.domain is DOMAIN (for P_domain prompts).")
@click.option("--min-count", default=0, show_default=True, type=click.IntRange(0),
              help="Experts firing on fewer tokens get a record with stats only (status below-min-count).")
@output_guard()
def command(input, output, fmt, uncompressed, layers, experts, **options):
    """Per-expert example sets from a trace: top, importance-weighted, negatives, holdout.

    Reads a `trace` stream (formats/trace.md; concatenated shards are fine, in
    any order) in one pass with memory bounded by layers x experts x set sizes,
    and writes a `samples` stream (formats/samples.md): one `expert` record per
    (layer, expert) with an explain set (top-activated, importance-weighted and
    negative contexts) and a disjoint holdout set for scoring. Every context
    carries its token pieces, the expert's activation per token, the marked
    token, the document id, offset and metadata.

    Experts with fewer examples than asked are kept and flagged (`short`); a
    summary goes to stderr and into the end record. Same input and --seed give
    identical output. Exit 2 for input that is not a trace, 3 for a truncated one.
    """
    sample_options = SampleOptions(layers=parse_ids(layers, "layers"), experts=parse_ids(experts, "experts"),
                                   **options)
    sample_options.check()
    reader = read_input(input, kinds="trace", validate=True)  # formats/trace.md, field by field
    with progress("moe-sample: reading the trace") as bar:
        header_extra, records, summary = sample_trace(reader, sample_options, on_record=lambda _: bar.advance())
    with open_stream_writer(output, "samples", fmt, uncompressed, model=reader.header.get("model"),
                            header_extra=header_extra) as writer:
        for record in records:
            writer.write(record)
        writer.end_extra = {"summary": summary}
    say(summary_line(summary))
    if sample_options.domain is not None and not summary["sequences"]:
        warn(f"no sequence has meta.domain {sample_options.domain!r}: every expert is empty")


main = command.main
