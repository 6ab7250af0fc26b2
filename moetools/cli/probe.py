"""moe-probe: neuron-level evidence of paper 002 (logic: ``moetools.probe``)."""

from __future__ import annotations

import click

from ..errors import UsageError
from .common import (
    FINITE_FLOAT,
    output_guard,
    output_options,
    progress,
    say,
    subcommand_verbosity,
    tool_group,
    warn,
)
from .llm_options import llm_options

EXAMPLE = """\
moe-probe neurons .moetools/models/moe corpus.jsonl -o probe.jsonl
moe-probe neurons dense/ corpus.jsonl --k 1,4,16 --concepts digit,domain:code --format jsonl | moe-cat --check
moe-probe neurons model/ corpus.jsonl --shuffle-labels -o control.jsonl   # the chance-level control
moe-probe causal model/ labels.jsonl --api-base http://localhost:8000/v1 --model Qwen/Qwen3-8B -o causal.jsonl
moe-probe causal model/ offline.labels.jsonl --backend offline -o causal.jsonl   # no LLM: the labels' own evidence"""


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise UsageError(f"--k takes comma-separated integers like 1,2,4, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise UsageError(f"--k takes positive integers, got {text!r}")
    return ks


def parse_names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(part.strip() for part in text.split(",") if part.strip())


@tool_group("moe-probe", example=EXAMPLE)
def command():
    """Neuron-level evidence for expert interpretability (paper 002).

    moe-probe neurons MODEL CORPUS: k-sparse probing of expert neurons (or a dense
    model's FFN neurons) on offline token concepts; writes a `probe` stream
    (formats/probe.md) and prints the best layer/expert F1 per concept and k.

    moe-probe causal MODEL LABELS: trigger/target attribution of labels; ranks
    every expert of a label's layer by direct logit attribution onto the targets.
    """


@command.command("neurons")
@subcommand_verbosity
@click.argument("model", type=click.Path(file_okay=False))
@click.argument("corpus", type=click.Path(dir_okay=False, allow_dash=True))
@output_options(default_format="jsonl")
@click.option("--k", "ks", default="1,2,4,8,16,32,64", show_default=True,
              help="Numbers of neurons the probes use (paper 002: 1..64); k above the hidden width is left out.")
@click.option("--concepts", default=None, metavar="NAMES",
              help="Only these concepts (comma-separated, e.g. digit,domain:code); default all.")
@click.option("--domains", default="code,legal,medical,math,general,offensive", show_default=True,
              help="Corpus domains that become concepts domain:NAME.")
@click.option("--concept-file", type=click.Path(dir_okay=False, allow_dash=True),
              help="Your own concepts: JSON lines {\"id\": DOC_ID, \"labels\": {CONCEPT: [token positions]}} "
                   "(0-based, as the model's tokenizer splits the document; formats/probe.md).")
@click.option("--domain-field", default="domain", show_default=True, help="Corpus field holding the domain.")
@click.option("--min-count", default=50, show_default=True, type=click.IntRange(1),
              help="Skip (and count) a concept for an expert with fewer positives or negatives routed to it "
                   "(paper 002: 50).")
@click.option("--test-fraction", default=0.25, show_default=True, type=FINITE_FLOAT,
              help="Share of documents held out for the test F1 (paper 002: 75/25 by document).")
@click.option("--reservoir", default=2048, show_default=True, type=click.IntRange(16),
              help="Training rows sampled per layer and expert for the regression (test: a third); bounds memory.")
@click.option("--max-length", default=256, show_default=True, type=click.IntRange(2), help="Tokens per window.")
@click.option("--batch-tokens", default=2048, show_default=True, type=click.IntRange(1),
              help="Padded tokens per forward pass.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the split and the samples.")
@click.option("--shuffle-labels", is_flag=True, help="Control: each token gets the labels of a random token of "
                                                     "its batch (F1 should fall to chance).")
@click.option("--text-field", default="text", show_default=True, help="Corpus field holding the text.")
@click.option("--id-field", default="id", show_default=True, help="Corpus field holding the document id.")
@click.option("--device", default="cpu", show_default=True, help="Device to run the model on.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True, help="Model weights dtype. auto: the checkpoint's own (a bf16 checkpoint runs in "
                                      "bf16), as moe-trace loads it, so the fingerprint matches its labels.")
@output_guard()
def neurons(model, corpus, output, fmt, uncompressed, ks, concepts, domains, concept_file, domain_field, min_count,
            test_fraction, reservoir, max_length, batch_tokens, seed, shuffle_labels, text_field, id_field, device, dtype):
    """k-sparse probing of expert (or dense FFN) neurons on token concepts (paper 002).

    Captures h = act(W_gate x) * (W_up x) inside each expert's computation on the
    tokens routed to it (a dense model: the FFN hidden vector), ranks neurons by
    |E[h_j | y=1] - E[h_j | y=0]| on the training documents, fits an L2 logistic
    regression on the top k, and reports F1 on held-out documents, one `probe`
    record per (concept, layer, expert, k), and a `best` record per (concept, k)
    whose layer/expert is chosen by training F1. Memory is bounded by layers x
    experts x (--reservoir) whatever the corpus length. Exit 2 on bad input.
    """
    from ..corpus.documents import read_corpus
    from ..models import model_identity
    from ..models.loader import load_model
    from ..probe.neurons import (
        ProbeOptions,
        best_table,
        collect,
        dense_identity,
        header_extra,
        probe_records,
        read_concept_file,
        summary_line,
    )
    from .common import open_stream_writer

    options = ProbeOptions(ks=parse_ks(ks), min_count=min_count, test_fraction=test_fraction, reservoir=reservoir,
                           max_length=max_length, batch_tokens=batch_tokens, seed=seed,
                           domains=parse_names(domains) or (), concepts=parse_names(concepts),
                           domain_field=domain_field, shuffle_labels=shuffle_labels)
    options.check()
    user_labels = read_concept_file(concept_file) if concept_file else None
    loaded = load_model(model, dtype=dtype, device=device, require_moe=False)
    dense = loaded.adapter is None
    say(f"probing {'dense FFN' if dense else 'expert'} neurons of {model}")
    # the one corpus rule: unusable lines and empty documents counted in one warning each, nothing left refused
    documents = read_corpus(corpus, text_field=text_field, id_field=id_field, warn=warn)
    with progress("moe-probe: reading the corpus") as bar:
        labeller, layers, summary = collect(loaded.model, loaded.tokenizer, loaded.adapter, documents, options,
                                            on_batch=lambda count: bar.advance(count), user_labels=user_labels)
    if not summary.tokens:
        raise UsageError(f"{corpus} has no tokens to probe")
    records = probe_records(labeller, layers, options, summary, dense)
    identity = dense_identity(loaded.model, model) if dense else model_identity(loaded.model, loaded.adapter,
                                                                                 path=model)
    with open_stream_writer(output, "probe", fmt, uncompressed, model=identity,
                            header_extra=header_extra(labeller, options, dense, corpus)) as writer:
        for record in records:
            writer.write(record)
        writer.end_extra = {"summary": summary.as_dict()}
    say(summary_line(summary))
    if user_labels is not None and summary.concept_file_documents < len(user_labels):
        warn(f"{len(user_labels) - summary.concept_file_documents} of the concept file's {len(user_labels)} "
             "documents are not in the corpus")
    if not summary.probes:
        warn(f"no concept had {min_count} positives and negatives for any expert: nothing was probed "
             "(lower --min-count or use a longer corpus)")
    else:
        say("test F1 of the best layer/expert (chosen on training F1):\n" + best_table(records))


@command.command("causal")
@subcommand_verbosity
@click.argument("model", type=click.Path(file_okay=False))
@click.argument("labels", type=click.Path(dir_okay=False, allow_dash=True))
@output_options(default_format="jsonl")
@llm_options(backend_default="openai", local=False, model="llm_model", max_tokens_default=256,
             attempts_default=3,
             backend_help="Who proposes triggers/targets: an LLM backend (openai, local, a plugin's) or 'offline' "
                          "(the fallback: the labels' own top tokens and logit-lens tokens, no LLM).",
             attempts_help="answers asked for per label (a refused answer is asked again with the reason)",
             deprecated={"--llm-model": "--model"})
@click.option("--triggers", default=4, show_default=True, type=int, help="Trigger texts asked for per label.")
@click.option("--targets", default=4, show_default=True, type=int, help="Target tokens asked for per label.")
@click.option("--shuffles", default=100, show_default=True, type=int,
              help="Random-label baseline: permutations of the labels among a layer's experts, averaged.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the baseline's permutations.")
@click.option("--max-length", default=128, show_default=True, type=int, help="Most tokens of a trigger.")
@click.option("--device", default="cpu", show_default=True, help="Device to run the model on.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True, help="Model weights dtype. auto: the checkpoint's own (a bf16 checkpoint runs in "
                                      "bf16), as moe-trace loads it, so the fingerprint matches its labels.")
@output_guard()
def causal(model, labels, output, fmt, uncompressed, llm, triggers, targets, shuffles, seed, max_length, device,
           dtype):
    """Trigger/target attribution of labels (paper 002): does a label predict what its expert does?

    Per `ok` label, the LLM (or, with --backend offline, the fallback named as such in
    every record) proposes trigger texts and target tokens; the model runs on the
    triggers and every expert of the label's layer is ranked by direct logit attribution
    DLA_i = sum over trigger positions p and targets t of p_i(x_p) * W_U[t].(gamma *
    E_i(x_p)) / rms(h_p) (final RMSNorm linearised, its rms frozen; formats/probe.md).
    Writes `causal` records (every prompt, trigger, target and the labelled expert's
    rank) and `causal_layer` records (top-1/top-5 hit rates, random-label baseline,
    chance). Routers that softmax over all experts then take the top-k, without a score
    bias or group limit (OLMoE, Mixtral, Qwen-MoE, greedy DeepSeek-V2, plugin families
    of that rule); exit 2 for other models, labels of another model or bad options.
    The LLM options are moe-explain's (--model, --api-base, ..., -O KEY=VALUE;
    --llm-model is the old name of --model).
    """
    from ..probe import probe_causal
    from .common import tool_info

    probe_causal(model, labels, output, fmt=fmt, uncompressed=uncompressed, **llm.keywords(), triggers=triggers,
                 targets=targets, shuffles=shuffles, seed=seed, max_length=max_length, device=device, dtype=dtype,
                 tool=tool_info(), log=say, warn=warn, progress=progress)


main = command.main
