"""moe-report: one self-contained HTML page of a model's experts (logic: ``moetools.report``)."""

from __future__ import annotations

import click

from ..errors import UsageError
from .common import output_guard, say, tool

EXAMPLE = """\
moe-report trace.msgpack.zst samples.msgpack.zst labels.jsonl scores.jsonl -o report.html
moe-report samples.msgpack.zst offline.labels.jsonl llm.labels.jsonl joined.scores.jsonl -o report.html
moe-report labels.jsonl scores.jsonl medical.json eval.jsonl -o report.html
moe-report trace.msgpack.zst --baseline random-init.trace.msgpack.zst -o routing.html
moe-report trace.msgpack.zst scores.jsonl --document doc-17 --document doc-42 -o docs.html
moe-report trained.scores.jsonl --compare init.scores.jsonl --names trained,random-init -o compare.html
xdg-open 'report.html#3/17'"""


@tool("moe-report", example=EXAMPLE)
@click.argument("inputs", nargs=-1, metavar="INPUT...", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The HTML file to write (under a temporary name, renamed when complete).")
@click.option("--baseline", type=click.Path(dir_okay=False, exists=True), default=None, metavar="TRACE",
              help="A trace of another model of the same shape (e.g. a random-init copy, see `moetools demo`) "
                   "whose routing concentration is drawn beside the model's.")
@click.option("--contexts", default=4, show_default=True, type=click.IntRange(0),
              help="Top contexts per expert card.")
@click.option("--holdout", default=2, show_default=True, type=click.IntRange(0),
              help="Held-out examples per expert card, of each kind (positive, negative); with the "
                   "scorer's verdicts, its mistakes first.")
@click.option("--context-tokens", default=48, show_default=True, type=click.IntRange(1),
              help="Tokens kept per context, around its marked token.")
@click.option("--documents", default=8, show_default=True, type=click.IntRange(0),
              help="The first N documents of the trace in the document view (tokens coloured by expert).")
@click.option("--document", "document_ids", multiple=True, metavar="DOC_ID",
              help="Show this traced document (doc_id) in the document view instead; repeatable.")
@click.option("--document-tokens", default=256, show_default=True, type=click.IntRange(1),
              help="Tokens kept per document of the document view.")
@click.option("--compare", "compare", multiple=True, metavar="INPUT",
              type=click.Path(dir_okay=False, exists=True),
              help="An input of a second run (repeat for each: trace, scores, labels, ...) of the same layers x "
                   "experts: the page shows both runs and their difference.")
@click.option("--names", default=None, metavar="A,B",
              help="The two runs' names with --compare [their models' names, or A and B].")
@click.option("--title", default=None, help="Page title [moe-report: MODEL].")
@output_guard()
def command(inputs, output, baseline, contexts, holdout, context_tokens, documents, document_ids, document_tokens,
            compare, names, title):
    """One self-contained HTML page of a model's experts.

    Reads any subset of `trace`, `samples`, `labels`, `scores` and `eval`
    streams and experts.json files (formats/) of one model, in any order
    (streams of two models are refused, exit 2), and writes one HTML file
    with everything inline (style, script, figures, data): it opens from
    file:// with no network. The page has maps per layer x expert of the
    scores present (hover: the value and label; click: the expert's card;
    zoom for wide layers), the routing health panel (collapsed layers, dead
    and always-on experts, thresholds stated), routing concentration per
    domain beside its baselines, the selected expert sets, moe-eval's loss
    table (expert ids link to their cards), and one card per expert (labels and their explainers, scores, top contexts
    shaded by contribution, logit-lens tokens, domain histogram, holdout
    examples with the scorer's verdicts).

    Several labels streams may be given (e.g. offline labels of every expert
    and an LLM's of a few): a card shows each label with its explainer, an
    LLM's first. With judged scores (moe-score SAMPLES --labels, or joined)
    and the samples stream, a card names the scorer, marks every judged
    holdout sample right or wrong, and shows --holdout examples of each kind
    with their truth and prediction, the scorer's mistakes first.

    With a trace, a document view shows the first --documents documents
    (or each --document) token by token, coloured by the expert each token
    went to in a chosen layer, or shaded by one expert's gate; a --document
    the trace does not hold is refused (exit 2).

    With --compare (once per input of the second run) the page shows two
    runs of the same layers x experts, e.g. trained vs random-init, base vs
    tuned, two label sets: every score on the cards as A -> B (delta), both
    labels, maps of A, B or the delta, and with a trace on both sides the
    routing change of paper 003 (RC, the shift per expert) and the JSD per
    layer between the two mean router distributions. Runs of different
    layers x experts are refused (exit 2), saying what differs.

    Cards can be searched (the text of every label), sorted and filtered by
    any score, and report.html#LAYER/EXPERT opens one expert. Cards are
    drawn 50 at a time from inline JSON, so a 16k-expert MONET report opens
    (formats/report.md gives the bytes per expert).
    """
    if not inputs:
        raise UsageError("no input: give trace, samples, labels, scores, eval streams or experts.json files")
    if sum(1 for path in inputs if path == "-") > 1:
        raise UsageError("stdin ('-') can be given once")
    from ..report import ReportOptions, build_report

    options = ReportOptions(contexts=contexts, holdout=holdout, context_tokens=context_tokens, title=title,
                            documents=documents, document_ids=tuple(document_ids) or None,
                            document_tokens=document_tokens)
    pair = None
    if names is not None:
        pair = tuple(part.strip() for part in names.split(","))
        if len(pair) != 2 or not all(pair) or not compare:
            raise UsageError("--names takes two names, A,B, and goes with --compare")
    written = build_report(list(inputs), output, baseline=baseline, options=options, compare=list(compare) or None,
                           names=pair)
    say(f"{output}: {written['experts']} experts, {written['figures']} overview figures, "
        f"{written['bytes'] / 1e6:.2f} MB")


main = command.main
