"""moe-explain: one natural-language label per expert, from any LLM or none (logic: ``moetools.explain.run``)."""

from __future__ import annotations

import click

from .common import input_argument, output_guard, output_options, progress, say, tool, tool_info, warn
from .llm_options import llm_options

EXAMPLE = """\
moe-explain samples.msgpack.zst --backend offline -o labels.jsonl
moe-explain samples.msgpack.zst --api-base http://localhost:8000/v1 --model Qwen/Qwen3-8B \\
    --concurrency 32 --domain medical -o labels.medical.jsonl
moe-explain samples.msgpack.zst --experts sets/medical.json --backend local -o labels.medical.jsonl
moe-explain samples.msgpack.zst --backend local --prompt-form compact --max-tokens 48 -o labels.smollm2.jsonl
moe-explain --list-backends"""

EXPLAIN_FORCE_HELP = ("Start OUTPUT over instead of continuing it (an existing OUTPUT of moe-explain is continued: its "
                      "labels are kept); only an output this suite wrote is replaced, never an input.")


@tool("moe-explain", example=EXAMPLE)
@input_argument()
@output_options(default_format="jsonl")
@click.option("--list-backends", is_flag=True, help="List every backend with its options and defaults, and exit.")
@llm_options(backend_default="openai",
             backend_help="Explainer: an LLM backend (openai, local; entry points moetools.llm_backends), a method "
                          "(self, offline; entry points moetools.explainers, or modules in $MOETOOLS_EXPLAINERS).",
             attempts_help="times to ask when an answer is not a label (defaults: --list-backends)")
@click.option("--domain", default=None, metavar="NAME|FILE",
              help="Use P_domain(d) instead of P_mono: medical, legal, or a file with a domain of one's own "
                   "(.json with name/focus/important/examples, or the plain text to add).")
@click.option("--experts", "experts_file", default=None, metavar="FILE",
              help="Label only the experts listed in this experts file (moe-select's output, formats/experts.md); "
                   "the rest of the stream is skipped. A set selected on another model is refused.")
@click.option("--max-examples", type=int, default=None, help="Contexts shown per expert (defaults: --list-backends).")
@click.option("--logit-lens-top", type=int, default=None,
              help="Logit-lens tokens shown when the samples have them (0: none).")
@click.option("--prompt-form", type=click.Choice(["paper", "compact"]), default=None,
              help="paper (default): the papers' prompts; compact: a short prompt with at most 6 examples clipped to "
                   "16 tokens, for small local models such as SmolLM2-135M (recorded as prompt.form in every label).")
@click.option("--strict", is_flag=True,
              help="Exit 1 when any expert failed (other than for having no examples); the labels are written.")
@output_guard(continues=True, pass_force=True, force_help=EXPLAIN_FORCE_HELP)
def command(input, output, fmt, uncompressed, list_backends, llm, domain, experts_file, max_examples,
            logit_lens_top, prompt_form, strict, force):
    """Label every expert of a samples stream with a natural-language explanation.

    Reads a samples stream (moe-sample), shows the explainer each expert's
    activating contexts strongest first with the activating tokens wrapped in
    << >> (and its top logit-lens tokens when present) using the prompt P_mono or
    P_domain(d) of "Exploring Expert Monosemanticity in MoE LLMs" (Appendix A.1),
    and writes one label record per expert (formats/labels.md). An answer that is
    not a "This expert specializes in ..." label (no such sentence, the phrase
    mid-clause, only a list's lead-in, no specific content, a restatement of
    the prompt, no property named) is asked again, then recorded as failed with
    the raw text; one cut off at --max-tokens is first asked again once with
    twice the limit (at most 1024). Every label records its evidence: firing
    tokens, contexts, and whether the expert is always-on or rare.

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
    if list_backends:
        from ..explain import describe_backends

        click.echo(describe_backends())
        return
    from ..explain import explain_samples

    explain_samples(input, output, fmt=fmt, uncompressed=uncompressed, **llm.keywords(), domain=domain,
                    experts=experts_file, max_examples=max_examples, logit_lens_top=logit_lens_top,
                    prompt_form=prompt_form, strict=strict,
                    force=force, tool=tool_info(), log=say, warn=warn, progress=progress)


main = command.main

if __name__ == "__main__":  # pragma: no cover
    main()
