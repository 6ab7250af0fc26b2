"""moe-eval: per-domain loss and multiple-choice accuracy of model directories (logic: ``moetools.eval``)."""

from __future__ import annotations

import sys

import click

from ..eval.loss import LOSS_DEFINITIONS
from .common import open_stream_writer, output_guard, progress, say, tool

EXAMPLE = """\
moe-eval models/olmoe masked/ --data validation.jsonl --domain-field domain > eval.jsonl
moe-eval masked/ --choices items.jsonl -o eval.jsonl
moe-eval models/olmoe masked/ --data validation.jsonl        # a table on a terminal
moe-eval models/olmoe --data wiki.jsonl --loss-definition lm-eval --max-length 4096   # lm-eval's word perplexity"""


def _table(records: list[dict], paths: list[str]) -> None:
    from rich.table import Table

    from ..progress import table_console

    rolling = any("word_perplexity" in r for r in records)
    extra = ("word ppl", "byte ppl") if rolling else ()
    table = Table("model", "what", "tokens/items", "loss", "ppl", *extra, "acc", "acc_norm", "delta")
    fmt = (lambda v: "-" if v is None else f"{v:.4f}")
    for r in records:
        name = paths[r["model"]]
        if r["type"] == "domain":
            per = tuple(fmt(r.get(k)) for k in ("word_perplexity", "byte_perplexity")) if rolling else ()
            interval = r.get("delta_loss_ci95")
            table.add_row(name, r["domain"], str(r["tokens"]), fmt(r["loss"]), fmt(r["perplexity"]), *per, "", "",
                          ("" if r["delta_loss"] is None else f"{r['delta_loss']:+.4f}")
                          + (f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else ""))
        elif r["type"] == "choice":
            table.add_row(name, "choices", str(r["items"]), "", "", *("",) * len(extra), f"{r['acc']:.4f}",
                          f"{r['acc_norm']:.4f}", "" if r["delta_acc"] is None else f"{r['delta_acc']:+.4f}")
    table_console().print(table)


@tool("moe-eval", example=EXAMPLE)
@click.argument("models", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--data", type=click.Path(dir_okay=False, allow_dash=True),
              help="JSON-lines text corpus: mean loss, perplexity and tokens per domain.")
@click.option("--choices", type=click.Path(dir_okay=False),
              help="JSON-lines multiple-choice items {question, choices, answer}: acc and acc_norm.")
@click.option("--domain-field", default="domain", show_default=True, help="Field naming a document's domain.")
@click.option("--text-field", default="text", show_default=True, help="Field holding a document's text.")
@click.option("--max-length", default=512, show_default=True, type=click.IntRange(2),
              help="Tokens per window; longer documents are cut into consecutive windows.")
@click.option("--loss-definition", type=click.Choice(list(LOSS_DEFINITIONS)), default=LOSS_DEFINITIONS[0],
              show_default=True,
              help="Which tokens --data's loss scores. no-prefix: each window's tokens 2..n, nothing before the "
                   "document, token perplexity. lm-eval: lm-evaluation-harness's loglikelihood_rolling (the "
                   "prefix token before each document, every token scored, rolling windows of --max-length), "
                   "adding word and byte perplexity and bits per byte.")
@click.option("--batch-tokens", default=4096, show_default=True, type=click.IntRange(1),
              help="Padded tokens per batch (documents batched by length).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
@click.option("-o", "--output", default="-", show_default=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Output file ('-': stdout; a table instead when stdout is a terminal).")
@output_guard()
def command(models, data, choices, domain_field, text_field, max_length, loss_definition, batch_tokens, dtype, device,
            output):
    """Per-domain loss and multiple-choice accuracy of one or more model directories.

    Writes an `eval` stream (formats/eval.md, JSON lines): a `model` record per
    MODEL (its identity and, for a moe-mask directory, the mask's provenance),
    then a `domain` record per domain of --data (mean next-token loss in nats
    per token, perplexity, token and document counts) and a `choice` record for
    --choices (acc and acc_norm, as lm-evaluation-harness names them). Every
    model after the first carries deltas against the first, each loss change
    with its 95% interval (paired bootstrap over the domain's documents), and
    a `document` record per document gives its tokens and loss. moe-mask
    directories of every mode load, the custom-code mode only when its code is
    moe-mask's own.

    Which tokens the loss scores (--loss-definition):

    no-prefix (the default): each document is tokenised with the tokenizer's
    own special tokens and nothing is put before it; a document longer than
    --max-length tokens is cut into consecutive windows of --max-length, each
    scored on its own. The first token of every window is context only, so
    tokens 2..n of a one-window document are scored. loss = Σ −log p(x_t |
    x_<t) over the scored tokens of a domain / their number (nats per token);
    perplexity = exp(loss), a token perplexity. This is not the definition of
    lm-evaluation-harness: its numbers differ (most on short documents, whose
    first token it scores) and it reports word and byte perplexity.

    lm-eval: lm-evaluation-harness's loglikelihood_rolling, as its `hf` model
    computes it: the prefix token (the tokenizer's BOS, else its EOS) before
    each document, every token of the document scored; a document longer
    than --max-length (lm-eval's max_length) is scored in lm-eval's rolling
    windows, each later window reading the --max-length tokens before its
    last. The domain record adds loglikelihood (Σ log p, nats), words and
    bytes (lm-eval's counts), word_perplexity = exp(−Σll / Σwords),
    byte_perplexity = exp(−Σll / Σbytes) and bits_per_byte = −Σll / Σbytes /
    ln 2, the numbers lm-eval prints for a loglikelihood_rolling task
    (wikitext and the like). lm-eval's own max_length is the model's context
    (config n_positions, max_position_embeddings or n_ctx, else 2048): give
    that as --max-length to compare with its default run. A tokenizer with
    neither BOS nor EOS is refused (exit 2).
    """
    from ..errors import UsageError
    from ..eval import evaluate

    if data is None and choices is None:
        raise UsageError("give --data, --choices or both")
    table = output == "-" and sys.stdout.isatty()
    records = []
    stream = evaluate(list(models), data=data, choices=choices, domain_field=domain_field, text_field=text_field,
                      max_length=max_length, batch_tokens=batch_tokens, loss_definition=loss_definition,
                      dtype=dtype, device=device,
                      on_model=lambda p: say(f"evaluating {p}"), progress=progress)
    if table:
        records = list(stream)
    else:
        header = {"models": [str(m) for m in models], "data": data, "choices": choices,
                  "domain_field": domain_field, "max_length": max_length, "loss_definition": loss_definition}
        with open_stream_writer(output, "eval", "jsonl", header_extra=header) as writer:
            for record in stream:
                writer.write(record)
    if table:
        _table(records, list(models))


main = command.main
