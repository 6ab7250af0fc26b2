"""moe-explain: one natural-language label per expert, from any LLM or none."""

from __future__ import annotations

import click

from ..errors import MoetoolsError, UsageError
from .common import (
    FINITE_FLOAT,
    input_argument,
    open_stream_writer,
    output_options,
    progress,
    read_input,
    say,
    tool,
    warn,
)

EXAMPLE = """\
moe-explain samples.msgpack.zst --backend offline -o labels.jsonl
moe-explain samples.msgpack.zst --api-base http://localhost:8000/v1 --model Qwen/Qwen3-8B \\
    --concurrency 32 --domain medical -o labels.medical.jsonl
moe-explain samples.msgpack.zst --experts sets/medical.json --backend local -o labels.medical.jsonl
moe-explain --list-backends"""

#: flags handed to the backend's own options (each backend takes some; defaults: --list-backends)
BACKEND_FLAGS = (
    ("--model", str, ("The model: a server's model name (required with --api-base unless the server lists "
                      "exactly one), or a directory or .gguf file for local/self.")),
    ("--temperature", FINITE_FLOAT, "Sampling temperature (0: greedy)."),
    ("--max-tokens", int, "Most tokens an answer may have."),
    ("--api-base", str, "openai: base URL of the endpoint [default: $OPENAI_BASE_URL or the OpenAI API]."),
    ("--api-key-env", str, "openai: environment variable holding the API key (never printed or stored)."),
    ("--concurrency", int, "openai: most requests in flight (halved while requests time out)."),
    ("--rate", FINITE_FLOAT, "openai: most requests started per second (0: no limit)."),
    ("--timeout", FINITE_FLOAT, "openai: seconds to wait for an answer once connected (read timeout)."),
    ("--connect-timeout", FINITE_FLOAT, "openai: seconds to wait for a connection."),
    ("--max-retries", int, "openai: retries of a request on 429/5xx/timeouts/connection errors/bad JSON."),
    ("--backoff-base", FINITE_FLOAT, "openai: first retry waits about this many seconds, doubling (with jitter)."),
    ("--batch-size", int, "local: prompts generated together."),
    ("--device", str, "local, self: torch device."),
)
BACKEND_PARAMS = tuple(flag[2:].replace("-", "_") for flag, _, _ in BACKEND_FLAGS)


def backend_options(function):
    for flag, kind, help_text in reversed(BACKEND_FLAGS):
        function = click.option(flag, type=kind, default=None, help=help_text)(function)
    return function


def parse_pairs(pairs) -> dict:
    given = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-O {pair!r}: expected KEY=VALUE")
        given[key.strip().replace("-", "_")] = value
    return given


@tool("moe-explain", example=EXAMPLE)
@input_argument()
@output_options(default_format="jsonl")
@click.option("--backend", default="openai", show_default=True,
              help="Explainer: an LLM backend (openai, local; entry points moetools.llm_backends), a method "
                   "(self, offline; entry points moetools.explainers, or modules in $MOETOOLS_EXPLAINERS).")
@click.option("--list-backends", is_flag=True, help="List every backend with its options and defaults, and exit.")
@backend_options
@click.option("-O", "--backend-option", "backend_option", multiple=True, metavar="KEY=VALUE",
              help="An option of the backend that has no flag here (e.g. a plugin's; see --list-backends).")
@click.option("--domain", default=None, metavar="NAME|FILE",
              help="Use P_domain(d) instead of P_mono: medical, legal, or a file with a domain of one's own "
                   "(.json with name/focus/important/examples, or the plain text to add).")
@click.option("--experts", "experts_file", default=None, metavar="FILE",
              help="Label only the experts listed in this experts file (moe-select's output, formats/experts.md); "
                   "the rest of the stream is skipped. A set selected on another model is refused.")
@click.option("--max-examples", type=int, default=None, help="Contexts shown per expert (defaults: --list-backends).")
@click.option("--logit-lens-top", type=int, default=None,
              help="Logit-lens tokens shown when the samples have them (0: none).")
@click.option("--attempts", type=int, default=None, help="Times to ask when an answer is not a label.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Response cache [default: $MOETOOLS_HOME/cache; MOETOOLS_HOME defaults to "
                   "~/.cache/moetools].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache.")
@click.option("--refresh", is_flag=True,
              help="Ask again even when the cache has an answer (and store the new one).")
@click.option("--strict", is_flag=True,
              help="Exit 1 when any expert failed (other than for having no examples); the labels are written.")
def command(input, output, fmt, uncompressed, backend, list_backends, backend_option, domain, experts_file,
            max_examples,
            logit_lens_top, attempts, cache_dir, no_cache, refresh, strict, **flags):
    """Label every expert of a samples stream with a natural-language explanation.

    Reads a samples stream (moe-sample), shows the explainer each expert's
    activating contexts strongest first with the activating tokens wrapped in
    << >> (and its top logit-lens tokens when present) using the prompt P_mono or
    P_domain(d) of "Exploring Expert Monosemanticity in MoE LLMs" (Appendix A.1),
    and writes one label record per expert (formats/labels.md). An answer that is
    not a "This expert specializes in ..." label (no such sentence, the phrase
    mid-clause, only a list's lead-in, no specific content, cut off at
    --max-tokens) is asked again, then recorded as failed with the raw text.

    Each backend takes its own options (moe-explain --list-backends shows them
    with their defaults); a flag the backend does not take is an error. The
    server of --api-base is asked for its models before any work: an
    unreachable server exits 1, a bad URL exits 2.

    --experts FILE labels just the experts an experts file lists (e.g. a set of
    moe-select): the others are neither labelled nor written; the offline
    method still reads the whole stream for its background counts.

    Answers that are labels are cached on disk, so a rerun sends no request it
    already has an answer for; rerunning with the same -o FILE resumes: experts
    already labelled there are skipped, failed ones are asked again. A line on
    stderr at the end counts requests, cache hits, retries, failures and tokens.
    Exit status 1 when no expert was labelled (with --strict: when any failed).
    """
    from ..explain import (
        ExplainSettings,
        ResponseCache,
        describe_backends,
        listed_experts,
        load_domain,
        make_explainer,
        make_runner,
        run_sync,
    )
    from ..explain.output import previous_labels

    if list_backends:
        click.echo(describe_backends())
        return
    given = {name: value for name, value in flags.items() if name in BACKEND_PARAMS and value is not None}
    given.update(parse_pairs(backend_option))
    settings = ExplainSettings.from_settings({name: value for name, value in
                                              (("max_examples", max_examples), ("logit_lens_top", logit_lens_top),
                                               ("attempts", attempts)) if value is not None})
    domain_spec = load_domain(domain) if domain else None
    explainer = make_explainer(backend, given, settings=settings)
    if domain_spec is not None and not explainer.uses_chat_prompt:
        raise UsageError(f"--domain needs a chat backend (openai, local); {backend} has no domain prompt")
    runner = make_runner(explainer, cache=ResponseCache(cache_dir, enabled=not no_cache, read=not refresh),
                         domain=domain_spec)

    def explain_settings() -> dict:
        settings = {"explainer": explainer.identity(), "prompt": runner.prompt_record()}
        if domain_spec is not None:
            settings["domain_text"] = domain_spec.system_addition()
        return settings

    if explainer.model is not None or not explainer.uses_chat_prompt:
        previous_labels(output, explain_settings())  # refuse a mixed output before contacting anyone
    explainer.prepare()
    header_settings = explain_settings()
    kept = previous_labels(output, header_settings)
    done = {(int(label["layer"]), int(label["expert"])) for label in kept}

    reader = read_input(input, kinds="samples", validate=True)  # formats/samples.md, field by field
    only = listed_experts(experts_file, reader.header.get("model")) if experts_file else None
    with open_stream_writer(output, "labels", fmt, uncompressed, model=reader.header.get("model"),
                            header_extra={"explain": header_settings}, keep_partial=True) as writer:
        for label in kept:
            writer.write(label)
        writer.flush()

        def emit(label: dict) -> None:
            writer.write(label)
            writer.flush()  # a kill keeps every label written so far

        seconds = run_sync(runner, reader, emit,
                           skip=lambda record: (int(record["layer"]), int(record["expert"])) in done,
                           progress=progress, only=only)
        accounting = runner.accounting.as_dict()
        accounting["seconds"] = round(seconds, 3)
        writer.end_extra = {"accounting": accounting}
    accounting = runner.accounting
    say(accounting.line(seconds))
    if only is not None:
        missing = len(only - runner.listed_seen)
        say(f"--experts: {len(runner.listed_seen)} of {len(only)} listed experts in the stream, "
            f"{runner.unlisted} others skipped" + (f"; {missing} listed experts have no samples record" if missing else ""))
    failed = accounting.failures - accounting.no_examples
    advice = runner.advice()
    if failed:
        warn(f"{failed} experts failed (status \"failed\" with the reason); "
             + (f"{advice}; then " if advice else "") + "rerun with the same -o to try them again")
    if accounting.no_examples:
        say(f"{accounting.no_examples} experts had no activating examples to explain (status \"failed\"; e.g. "
            "below moe-sample's --min-count)")
    if accounting.failures and not accounting.labelled and not accounting.skipped:
        raise MoetoolsError(f"no expert was labelled ({accounting.failures} failed)")
    if strict and failed:
        raise MoetoolsError(f"{failed} experts failed (--strict)")


main = command.main

if __name__ == "__main__":  # pragma: no cover
    main()
