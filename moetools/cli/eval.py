"""moe-eval: per-domain loss and multiple-choice accuracy of model directories (logic: ``moetools.eval``)."""

from __future__ import annotations

import sys

import click

from .common import open_stream_writer, progress, say, tool

EXAMPLE = """\
moe-eval models/olmoe masked/ --data validation.jsonl --domain-field domain > eval.jsonl
moe-eval masked/ --choices items.jsonl -o eval.jsonl
moe-eval models/olmoe masked/ --data validation.jsonl        # a table on a terminal"""


def _table(records: list[dict], paths: list[str]) -> None:
    from rich.table import Table

    from ..reporting import table_console

    table = Table("model", "what", "tokens/items", "loss", "ppl", "acc", "acc_norm", "delta")
    for r in records:
        name = paths[r["model"]]
        if r["type"] == "domain":
            fmt = (lambda v: "-" if v is None else f"{v:.4f}")
            table.add_row(name, r["domain"], str(r["tokens"]), fmt(r["loss"]), fmt(r["perplexity"]), "", "",
                          "" if r["delta_loss"] is None else f"{r['delta_loss']:+.4f}")
        elif r["type"] == "choice":
            table.add_row(name, "choices", str(r["items"]), "", "", f"{r['acc']:.4f}", f"{r['acc_norm']:.4f}",
                          "" if r["delta_acc"] is None else f"{r['delta_acc']:+.4f}")
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
@click.option("--batch-tokens", default=4096, show_default=True, type=click.IntRange(1),
              help="Padded tokens per batch (documents batched by length).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
@click.option("-o", "--output", default="-", show_default=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Output file ('-': stdout; a table instead when stdout is a terminal).")
def command(models, data, choices, domain_field, text_field, max_length, batch_tokens, dtype, device, output):
    """Per-domain loss and multiple-choice accuracy of one or more model directories.

    Writes an `eval` stream (formats/eval.md, JSON lines): a `model` record per
    MODEL (its identity and, for a moe-mask directory, the mask's provenance),
    then a `domain` record per domain of --data (mean next-token loss in nats
    per token, perplexity, token and document counts) and a `choice` record for
    --choices (acc and acc_norm, as lm-evaluation-harness names them). Every
    model after the first carries deltas against the first. moe-mask
    directories of every mode load, the custom-code mode only when its code is
    moe-mask's own.
    """
    from ..errors import UsageError
    from ..eval import evaluate

    if data is None and choices is None:
        raise UsageError("give --data, --choices or both")
    table = output == "-" and sys.stdout.isatty()
    records = []
    stream = evaluate(list(models), data=data, choices=choices, domain_field=domain_field, text_field=text_field,
                      max_length=max_length, batch_tokens=batch_tokens, dtype=dtype, device=device,
                      on_model=lambda p: say(f"evaluating {p}"), progress=progress)
    if table:
        records = list(stream)
    else:
        header = {"models": [str(m) for m in models], "data": data, "choices": choices,
                  "domain_field": domain_field, "max_length": max_length}
        with open_stream_writer(output, "eval", "jsonl", header_extra=header) as writer:
            for record in stream:
                writer.write(record)
    if table:
        _table(records, list(models))


main = command.main
