"""moe-score: routing statistics of experts from traces (logic: ``moetools.score``)."""

from __future__ import annotations

import os
import sys

import click

from ..errors import UsageError
from .common import FINITE_FLOAT, open_stream_writer, output_guard, progress, read_input, say, tool, warn
from .score_judge import judge_options, pop_judge_flags

EXAMPLE = """\
moe-trace model/ corpus.jsonl | moe-score --domain-field domain > routing.scores.jsonl
moe-score medical.msgpack.zst --general general.msgpack.zst --cdas-k 6 -o medical.scores.jsonl
moe-score toxic.msgpack.zst --target-field toxicity --metrics pearson,af > toxic.scores.jsonl
moe-score after.msgpack.zst --rc-against before.msgpack.zst --metrics rc_shift | jq .rc_shift
moe-score trace.msgpack.zst --format table --table-by das
moe-score samples.msgpack.zst --labels labels.jsonl --api-base URL --model NAME > judged.scores.jsonl
moe-score samples.msgpack.zst --labels labels.jsonl --backend embedding > offline.scores.jsonl
moe-score join routing.scores.jsonl judged.scores.jsonl > all.scores.jsonl"""


def parse_metrics(text: str | None):
    if text is None or text == "auto":
        return None
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not names:
        raise UsageError("--metrics is empty")
    return names


@tool("moe-score", example=EXAMPLE)
@click.argument("traces", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", default="-", show_default=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Output file; '-' is stdout. Written under a temporary name and renamed when complete.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "msgpack", "table"]), default="jsonl",
              show_default=True, help="scores stream as JSON lines or msgpack(+zstd), or a human table.")
@click.option("--uncompressed", is_flag=True, help="Write msgpack without zstd compression.")
@click.option("--domain-field", default="domain", show_default=True,
              help="Document meta field that names its domain.")
@click.option("--default-domain", default=None,
              help="Domain of documents without the field (default: they are counted and left out).")
@click.option("--general", default="rest", show_default=True, metavar="rest|DOMAIN|TRACE",
              help="General data D_g of DAS (003 eq. 1): every other domain, one named domain, or a trace "
                   "file whose tokens are all general.")
@click.option("--target-field", default=None,
              help="Numeric document meta field (e.g. toxicity) for the Pearson correlation (004 sec. 5.2).")
@click.option("--rc-against", default=None, type=click.Path(dir_okay=False),
              help="Trace of the same corpus through the other checkpoint: routing consistency (003 eq. 4-5).")
@click.option("--metrics", default=None, metavar="LIST",
              help="Comma-separated metrics to compute and write (no others); one that the input cannot "
                   "give is an error (default: every metric the input supports).")
@click.option("--permutations", default=1000, show_default=True, type=click.IntRange(0),
              help="Domain-label shuffles of the skew permutation test (0: no p/q-values).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the shuffles.")
@click.option("--min-ratio", default=2.0, show_default=True, type=FINITE_FLOAT,
              help="Skew criterion: best domain >= RATIO x runner-up (004 sec. 5.1).")
@click.option("--cdas-k", "cdas_k", multiple=True, type=click.IntRange(1), default=(6,), show_default=True,
              help="k of C-DAS@k (003 eq. 2); repeat for several.")
@click.option("--document-memory", default=1024, show_default=True, type=click.IntRange(1), metavar="MIB",
              help="Upper bound of per-document state (permutation test, Pearson).")
@click.option("--model", "model_dir", default=None, metavar="DIR|NAME",
              help="Model directory: JSD routing/functional specialisation over spherical k-means clusters of "
                   "its unembedding (paper 002; reads only that tensor from safetensors); it must be the traced "
                   "model (fingerprint), else exit 2. With --labels: the "
                   "scorer LLM (a server's model name, or a directory or .gguf file for --backend local).")
@click.option("--clusters", default=100, show_default=True, type=click.IntRange(2, 100_000),
              help="k of the unembedding k-means (paper 002: 10 to 5000).")
@click.option("--jsd-draws", default=10, show_default=True, type=click.IntRange(1),
              help="Draws of the random-expert JSD baseline.")
@click.option("--table-by", default="das", show_default=True, help="Metric ranking the --format table rows.")
@click.option("--table-top", default=10, show_default=True, type=click.IntRange(1),
              help="Rows per domain of --format table.")
@judge_options
@output_guard()
def command(traces, output, fmt, uncompressed, general, rc_against, metrics, document_memory, cdas_k,
            table_by, table_top, **options):
    """Routing statistics of every expert from one or more traces, in one pass.

    Reads `trace` streams (formats/trace.md; several files or concatenated
    shards of one model) and writes a `scores` stream (formats/scores.md): one
    `expert` record per (layer, expert) with, per domain (document meta field
    --domain-field), AF (000 eq. 6), DAS (003 eq. 1), the alternatives of 003
    Table 5 (score, explen, psn), REAP saliency, ESFT's token and gate scores,
    and per expert the domain skew of MONET (004 sec. 5.1) with a permutation
    p-value and Benjamini-Hochberg q-value, Pearson r with --target-field
    (004 sec. 5.2), RC with --rc-against (003 eq. 4-5), and with --model the
    JSD routing/functional specialisation over k-means clusters of the
    unembedding beside a random-expert baseline (002). C-DAS@k and the
    skew counts (with the count expected under shuffled domains) are in the end
    record. Memory does not grow with the number of tokens; per-document state
    (permutation test, Pearson) is bounded by --document-memory.

    `moe-score join A B...` merges scores streams of one model (e.g. routing
    and LLM-judged scores) record by (layer, expert), refusing disagreeing
    values (formats/scores.md, Extending).

    Exit 2 for input that is not a trace (an expert id >= num_experts
    included), for a metric the traces cannot give (named, with how to
    produce it), for traces of different models, for a --model that is not
    the traced model, and for an option that would do nothing (--model,
    --target-field, --rc-against or --general when --metrics asks for none
    of the metrics it serves; --table-by not among --metrics); exit 3 for a
    truncated trace.

    `moe-score SAMPLES --labels LABELS` judges labels instead (paper 000
    A.2 scorer prompt through any LLM backend, or --backend embedding):
    EMS, precision, recall, F1, balanced accuracy, EDMS(d) for P_domain(d)
    labels and LDS per layer on the holdout set of the samples stream, each
    beside the score of a label drawn from another expert of the layer
    (`_shuffled`). Answers are cached (a rerun sends no request it has an
    answer for). `join` with routing scores adds EDMRS = AF x EDMS.
    """
    judge = pop_judge_flags(options)   # moe-score --labels: moetools/cli/score_judge.py
    if judge["labels"]:
        from .score_judge import run_judge

        run_judge(traces, output, fmt, uncompressed, judge, model=options["model_dir"], seed=options["seed"],
                  domain_field=options["domain_field"])
        return
    if options["model_dir"] is not None and not os.path.isdir(options["model_dir"]):
        raise UsageError(f"--model {options['model_dir']}: not a model directory")
    if traces and traces[0] == "join":
        join(traces[1:], output, fmt, uncompressed)
        return
    from ..score import score_traces
    from ..score.run import resolve_general
    from ..score.scorer import METRICS, ScoreOptions

    asked = parse_metrics(metrics)
    if fmt == "table":  # the table ranks by one per-domain metric: one not written would give empty tables
        if METRICS.get(table_by, ("",))[0] != "domain":
            per_domain = ", ".join(name for name, (scope, _) in METRICS.items() if scope == "domain")
            raise UsageError(f"--table-by {table_by}: not a per-domain metric ({per_domain})")
        if asked is not None and table_by not in asked:
            raise UsageError(f"--table-by {table_by} is not among --metrics: add it, or rank by one of them")
    kind, general_trace = resolve_general(general)
    score_options = ScoreOptions(general=kind, metrics=asked, cdas_k=tuple(cdas_k),
                                 document_memory=document_memory << 20, **options)
    extra, records, summary, model = score_traces(list(traces), score_options, general_trace=general_trace,
                                                  rc_against=rc_against, progress=progress)
    for note in summary.get("notes", []):
        say(note)
    missing = summary["missing_domain"]
    if missing["documents"]:
        warn(f"{missing['documents']} documents ({missing['tokens']} tokens) have no meta.{options['domain_field']}: "
             "counted in the end record, not scored (--default-domain NAME scores them)")
    if fmt == "table":
        from ..score.table import render_table

        render_table(records, extra["domains"], by=table_by, top=table_top, file=sys.stdout)
        return
    with open_stream_writer(output, "scores", fmt, uncompressed, model=model, header_extra=extra) as writer:
        for record in records:
            writer.write(record)
        writer.end_extra = {"summary": summary}
    skew = summary.get("skew")
    line = f"scored {len(records)} experts over {sum(summary['tokens'].values())} tokens, " \
           f"{len(extra['domains'])} domains"
    if skew is not None:
        line += f"; {skew['specialised_total']} experts >= {skew['min_ratio']}x skewed"
        if "expected_under_null_total" in skew:
            line += (f" ({skew['expected_under_null_total']:.0f} expected with shuffled domains, "
                     f"{skew['significant_total']} at q < {skew['q_threshold']})")
    say(line)


def join(paths, output, fmt, uncompressed) -> None:
    """``moe-score join A B ...``: scores streams of one model merged by (layer, expert) (formats/scores.md)."""
    from ..score.join import join_streams

    if len(paths) < 2:
        raise UsageError("join needs at least two scores streams")
    if fmt == "table":
        raise UsageError("join writes a scores stream: --format jsonl or msgpack")
    readers = [read_input(path, kinds="scores", validate=True) for path in paths]
    model, extra, records, summary = join_streams(readers, [str(p) for p in paths])
    from ..score.judge import add_edmrs

    add_edmrs(extra, records)  # EDMRS = AF x EDMS where routing and judged scores meet (000 sec. 4.1)
    with open_stream_writer(output, "scores", fmt, uncompressed, model=model, header_extra=extra) as writer:
        for record in records:
            writer.write(record)
        writer.end_extra = {"summary": summary}
    say(f"joined {len(paths)} scores streams: {sum(r['type'] == 'expert' for r in records)} experts")


main = command.main
