"""moe-explain end to end without the CLI: a samples stream in, a labels stream out, resumable.

    from moetools.explain.run import explain_samples
    accounting = explain_samples("samples.msgpack.zst", "labels.jsonl", backend="openai",
                                 backend_options={"api_base": "http://localhost:8000/v1", "model": "m"},
                                 domain="medical", log=print, warn=print)

Rerunning with the same ``output`` resumes (:mod:`moetools.explain.output`): labels already there
are kept and their experts skipped. Raises :class:`moetools.errors.MoetoolsError` (exit 1) when no
expert was labelled, or with ``strict`` when any failed (the labels are written either way).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import MoetoolsError, UsageError
from ..llm.cache import response_cache
from ..progress import Log, ProgressFactory, log_info, log_warning, no_progress
from ..streams.files import open_stream_writer, read_input
from . import listed_experts, make_runner, run_sync
from .evidence import uniform_share
from .method import ExplainAccounting, ExplainSettings
from .output import previous_labels
from .prompts import load_domain
from .registry import make_explainer

CACHE_NAMESPACE = "explain"


def explain_samples(input, output, *, fmt: str = "jsonl", uncompressed: bool = False, backend: str = "openai",
                    backend_options: Mapping[str, Any] | None = None, domain: str | None = None,
                    experts: str | None = None, max_examples: int | None = None, logit_lens_top: int | None = None,
                    attempts: int | None = None, prompt_form: str | None = None, cache_dir: str | None = None, no_cache: bool = False,
                    refresh: bool = False, strict: bool = False, force: bool = False, tool: dict | None = None,
                    log: Log = log_info, warn: Log = log_warning, progress: ProgressFactory = no_progress) -> ExplainAccounting:
    """Label every expert of the samples stream ``input`` into ``output`` (see the module docstring).

    ``backend_options``: the backend's own options by name (moe-explain --list-backends);
    ``domain``: P_domain(d) for a built-in domain name or a domain file; ``experts``: an experts file
    whose experts alone are labelled; ``max_examples``, ``logit_lens_top``, ``attempts``, ``prompt_form``: the
    method's :class:`ExplainSettings` (None: its default). Returns the run's accounting.
    """
    settings = ExplainSettings.from_settings({name: value for name, value in
                                              (("max_examples", max_examples), ("logit_lens_top", logit_lens_top),
                                               ("attempts", attempts), ("prompt_form", prompt_form))
                                              if value is not None})
    domain_spec = load_domain(domain) if domain else None
    explainer = make_explainer(backend, dict(backend_options or {}), settings=settings)
    if domain_spec is not None and not explainer.uses_chat_prompt:
        raise UsageError(f"--domain needs a chat backend (openai, local); {backend} has no domain prompt")
    runner = make_runner(explainer, cache=response_cache(cache_dir, CACHE_NAMESPACE, no_cache=no_cache,
                                                         refresh=refresh), domain=domain_spec)

    def explain_settings() -> dict:
        settings = {"explainer": explainer.identity(), "prompt": runner.prompt_record()}
        if domain_spec is not None:
            settings["domain_text"] = domain_spec.system_addition()
        return settings

    if not force and (explainer.model is not None or not explainer.uses_chat_prompt):
        previous_labels(output, explain_settings())  # refuse a mixed output before contacting anyone
    explainer.prepare()
    header_settings = explain_settings()
    kept = [] if force else previous_labels(output, header_settings)
    done = {(int(label["layer"]), int(label["expert"])) for label in kept}

    reader = read_input(input, kinds="samples", validate=True)  # formats/samples.md, field by field
    only = listed_experts(experts, reader.header.get("model")) if experts else None
    runner.uniform_share = uniform_share(reader.header)
    with open_stream_writer(output, "labels", fmt, uncompressed, tool=tool, model=reader.header.get("model"),
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
    report(runner, seconds, only, log, warn, strict)
    return runner.accounting


def report(runner, seconds: float, only, log: Log, warn: Log, strict: bool) -> None:
    """The closing lines (counts, advice) and the failures that make the run fail."""
    accounting = runner.accounting
    log(accounting.line(seconds))
    if only is not None:
        missing = len(only - runner.listed_seen)
        log(f"--experts: {len(runner.listed_seen)} of {len(only)} listed experts in the stream, "
            f"{runner.unlisted} others skipped" + (f"; {missing} listed experts have no samples record" if missing else ""))
    failed = accounting.failures - accounting.no_examples
    advice = runner.advice()
    if failed:
        warn(f"{failed} experts failed (status \"failed\" with the reason); "
             + (f"{advice}; then " if advice else "") + "rerun with the same -o to try them again")
    if accounting.no_examples:
        log(f"{accounting.no_examples} experts had no activating examples to explain (status \"failed\"; e.g. "
            "below moe-sample's --min-count)")
    if accounting.failures and not accounting.labelled and not accounting.skipped:
        raise MoetoolsError(f"no expert was labelled ({accounting.failures} failed)")
    if strict and failed:
        raise MoetoolsError(f"{failed} experts failed (--strict)")


__all__ = ["CACHE_NAMESPACE", "explain_samples"]
