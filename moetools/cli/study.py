"""``moetools study``: the chain of tools on your own model and corpus (logic in :mod:`moetools.study`)."""

from __future__ import annotations

import click

from .. import study as study_lib
from .common import CONTEXT_SETTINGS, say, subcommand_verbosity

EXAMPLE = """\
moetools study models/olmoe corpus.jsonl -o study/
moetools study models/olmoe corpus.jsonl --domain-field topic --top 4 -o study/   # rerun: only what changed
OPENAI_BASE_URL=http://localhost:8000/v1 moetools study models/olmoe corpus.jsonl --llm-model Qwen/Qwen2.5-7B-Instruct -o study/"""


@click.command("study", context_settings=CONTEXT_SETTINGS, epilog="Example:\n\n\b\n  " + "\n  ".join(EXAMPLE.splitlines()))
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.argument("corpus", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", "output", type=click.Path(), required=True,
              help="Study directory: every stream, set, masked model, the report and study.log.")
@click.option("--domain-field", default="domain", show_default=True, help="Corpus field naming a document's domain.")
@click.option("--text-field", default="text", show_default=True, help="Corpus field holding a document's text.")
@click.option("--backend", default="auto", show_default=True,
              help="Who writes the labels: auto (openai when $OPENAI_BASE_URL is set, else offline), offline "
                   "(no LLM; judged by the embedding scorer), openai, local or a plugin's backend (labels and "
                   "judges).")
@click.option("--api-base", default=None, help="openai: base URL of the endpoint [$OPENAI_BASE_URL].")
@click.option("--llm-model", default=None, help="The LLM that labels and judges (openai: the server's model name; "
                                                 "local: a model directory or .gguf).")
@click.option("--top", type=click.IntRange(min=1), default=1, show_default=True,
              help="moe-select --top: experts in each domain's set and in each random control.")
@click.option("--permutations", type=click.IntRange(min=0), default=1000, show_default=True,
              help="moe-score --permutations (the domain-skew test).")
@click.option("--force", is_flag=True, help="Start an existing study directory over, or replace another output "
                                            "directory of the suite.")
@subcommand_verbosity
def study(model, corpus, output, domain_field, text_field, backend, api_base, llm_model, top, permutations, force):
    """Run the whole chain on your own model and corpus into one directory.

    CORPUS is JSON lines with a text field and a domain field (--domain-field);
    MODEL a Hugging Face MoE model directory. The steps, each one command of the
    installed tools: moe-trace, moe-sample, moe-explain (labels), moe-score (the
    routing scores, and the labels judged on held-out contexts, joined),
    moe-select (each domain's experts by DAS, and random controls of the same
    size), moe-mask (each set), moe-eval (the loss change on every domain when
    each set is masked) and moe-report (DIR/report.html); then a summary on
    stdout.

    Every step's command is printed and appended to DIR/study.log before it
    runs: copy one to rerun or change it. A step whose command and inputs are
    unchanged is skipped (a stamp beside its output), so rerunning after a kill
    or a change redoes only the unfinished or changed steps. An existing study
    directory is resumed without --force; --force starts it over; any other
    existing directory is refused (another output of the suite: use --force).

    Without an LLM endpoint ($OPENAI_BASE_URL, or --backend openai --api-base)
    the labels are the offline method's (no LLM) and the summary says so. A
    step that fails is reported in the summary and the chain goes on (exit 1).
    """
    study_lib.run_study(model, corpus, output, domain_field=domain_field, text_field=text_field,
                        backend=backend, api_base=api_base,
                        llm_model=llm_model, top=top, permutations=permutations, force=force, log=say,
                        echo=click.echo)


SUBCOMMAND = study
