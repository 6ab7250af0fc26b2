"""moe-probe: neuron-level evidence of paper 002 (logic: ``moetools.probe``)."""

from __future__ import annotations

import click

from ..errors import UsageError
from .common import FINITE_FLOAT, output_options, progress, say, subcommand_verbosity, tool_group, warn

EXAMPLE = """\
moe-probe neurons .moetools/models/moe corpus.jsonl -o probe.jsonl
moe-probe neurons dense/ corpus.jsonl --k 1,4,16 --concepts digit,domain:code --format jsonl | moe-cat --check
moe-probe neurons model/ corpus.jsonl --shuffle-labels -o control.jsonl   # the chance-level control
moe-probe causal model/ labels.jsonl --api-base http://localhost:8000/v1 --llm-model Qwen/Qwen3-8B -o causal.jsonl
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
@click.option("--dtype", default="float32", show_default=True, help="Model dtype (float32, bfloat16, auto).")
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
@click.option("--backend", default="openai", show_default=True,
              help="Who proposes triggers/targets: an LLM backend (openai, local, a plugin's) or 'offline' "
                   "(the fallback: the labels' own top tokens and logit-lens tokens, no LLM).")
@click.option("--llm-model", default=None, help="The LLM's model name (openai) or directory (local).")
@click.option("--api-base", default=None, help="openai: base URL of the endpoint [default: $OPENAI_BASE_URL].")
@click.option("--api-key-env", default=None, help="openai: environment variable holding the API key (never printed).")
@click.option("--concurrency", type=int, default=None, help="openai: most requests in flight.")
@click.option("--max-tokens", type=int, default=256, show_default=True, help="Most tokens of an answer.")
@click.option("--temperature", type=FINITE_FLOAT, default=None, help="Sampling temperature of the LLM.")
@click.option("-O", "--backend-option", "backend_option", multiple=True, metavar="KEY=VALUE",
              help="A backend option without a flag here.")
@click.option("--attempts", default=3, show_default=True, type=int,
              help="Answers asked for per label (a refused answer is asked again with the reason).")
@click.option("--triggers", default=4, show_default=True, type=int, help="Trigger texts asked for per label.")
@click.option("--targets", default=4, show_default=True, type=int, help="Target tokens asked for per label.")
@click.option("--shuffles", default=100, show_default=True, type=int,
              help="Random-label baseline: permutations of the labels among a layer's experts, averaged.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the baseline's permutations.")
@click.option("--max-length", default=128, show_default=True, type=int, help="Most tokens of a trigger.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False), help="Response cache directory.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache.")
@click.option("--refresh", is_flag=True, help="Ask again even when the cache has an answer.")
@click.option("--device", default="cpu", show_default=True, help="Device to run the model on.")
@click.option("--dtype", default="float32", show_default=True, help="Model dtype (float32, bfloat16, auto).")
def causal(model, labels, output, fmt, uncompressed, backend, llm_model, api_base, api_key_env, concurrency,
           max_tokens, temperature, backend_option, attempts, triggers, targets, shuffles, seed, max_length,
           cache_dir, no_cache, refresh, device, dtype):
    """Trigger/target attribution of labels (paper 002): does a label predict what its expert does?

    Per `ok` label, the LLM (or, with --backend offline, the fallback named as such in
    every record) proposes trigger texts and target tokens; the model runs on the
    triggers and every expert of the label's layer is ranked by direct logit attribution
    DLA_i = sum over trigger positions p and targets t of p_i(x_p) * W_U[t].(gamma *
    E_i(x_p)) / rms(h_p) (final RMSNorm linearised, its rms frozen; formats/probe.md).
    Writes `causal` records (every prompt, trigger, target and the labelled expert's
    rank) and `causal_layer` records (top-1/top-5 hit rates, random-label baseline,
    chance). Softmax top-k families only (OLMoE, Mixtral, Qwen-MoE); exit 2 for other
    models, labels of another model or bad options.
    """
    from ..models import model_identity
    from ..models.loader import load_model
    from ..probe.causal import (
        OFFLINE_PROPOSER,
        CausalOptions,
        Summary,
        evaluate,
        header_extra,
        layer_table,
        propose_llm,
        propose_offline,
        read_labels,
    )
    from ..probe.dla import check_supported
    from .common import open_stream_writer

    options = CausalOptions(triggers=triggers, targets=targets, attempts=attempts, seed=seed, shuffles=shuffles,
                            max_length=max_length)
    options.check()
    loaded = load_model(model, dtype=dtype, device=device, require_moe=False)
    check_supported(loaded.model, loaded.adapter)
    identity = model_identity(loaded.model, loaded.adapter, path=model)
    summary = Summary()
    layers = {layer.index: layer.num_experts for layer in loaded.adapter.moe_layers()}
    chosen = read_labels(labels, identity, layers, summary)
    if backend == "offline":
        stray = [flag for flag, value in (("--llm-model", llm_model), ("--api-base", api_base),
                                          ("--concurrency", concurrency)) if value is not None]
        if stray:
            raise UsageError(f"{stray[0]} does not apply to --backend offline")
        proposer, proposals = OFFLINE_PROPOSER, propose_offline(chosen, options)
    else:
        from ..llm import ResponseCache, make_client
        from ..probe.causal_prompts import CACHE_NAMESPACE

        given = {"max_tokens": max_tokens}
        for name, value in (("model", llm_model), ("api_base", api_base), ("api_key_env", api_key_env),
                            ("concurrency", concurrency), ("temperature", temperature)):
            if value is not None:
                given[name] = value
        for pair in backend_option:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"-O {pair!r}: expected KEY=VALUE")
            given[key.strip().replace("-", "_")] = value
        client = make_client(backend, given)
        client.prepare()
        proposer = {**client.label(), "method": "trigger-target-json-v1"}
        cache = ResponseCache(cache_dir, namespace=CACHE_NAMESPACE, enabled=not no_cache, read=not refresh)
        say(f"asking {backend} for triggers and targets of {len(chosen)} label(s)")
        proposals = propose_llm(client, cache, chosen, options)
    records = []
    with open_stream_writer(output, "probe", fmt, uncompressed, model=identity,
                            header_extra=header_extra(proposer, options, labels)) as writer:
        with progress("moe-probe: attributing") as bar:
            for record in evaluate(loaded.model, loaded.tokenizer, loaded.adapter, proposals, proposer, options,
                                   summary, on_label=lambda: bar.advance(1)):
                writer.write(record)
                records.append(record)
        writer.end_extra = {"summary": {"labels": summary.labels, "evaluated": summary.evaluated,
                                        "skipped": summary.skipped}}
    say(f"{summary.evaluated} of {summary.labels} label(s) attributed"
        + (f"; skipped {summary.skipped}" if summary.skipped else ""))
    if summary.evaluated:
        say(layer_table(records))
    else:
        warn("no label could be attributed (see the records' 'error')")


main = command.main
