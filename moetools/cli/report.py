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
@click.option("--title", default=None, help="Page title [moe-report: MODEL].")
@output_guard()
def command(inputs, output, baseline, contexts, holdout, context_tokens, title):
    """One self-contained HTML page of a model's experts.

    Reads any subset of `trace`, `samples`, `labels`, `scores` and `eval`
    streams and experts.json files (formats/) of one model, in any order
    (streams of two models are refused, exit 2), and writes one HTML file
    with everything inline (style, script, figures, data): it opens from
    file:// with no network. The page has overview heatmaps per layer x
    expert of the scores present, routing concentration per domain beside
    its baselines, the selected expert sets, moe-eval's loss table, and one
    card per expert (labels and their explainers, scores, top contexts
    shaded by contribution, logit-lens tokens, domain histogram, holdout
    examples with the scorer's verdicts).

    Several labels streams may be given (e.g. offline labels of every expert
    and an LLM's of a few): a card shows each label with its explainer, an
    LLM's first. With judged scores (moe-score SAMPLES --labels, or joined)
    and the samples stream, a card names the scorer, marks every judged
    holdout sample right or wrong, and shows --holdout examples of each kind
    with their truth and prediction, the scorer's mistakes first.

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

    options = ReportOptions(contexts=contexts, holdout=holdout, context_tokens=context_tokens, title=title)
    written = build_report(list(inputs), output, baseline=baseline, options=options)
    say(f"{output}: {written['experts']} experts, {written['figures']} overview figures, "
        f"{written['bytes'] / 1e6:.2f} MB")


main = command.main
