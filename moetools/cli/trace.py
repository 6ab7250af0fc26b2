"""moe-trace: routing traces of a transformers MoE model over a corpus.

Thin command: parses options, opens the corpus and the output, and calls
:mod:`moetools.trace` (the library; usable from Python without this CLI). The library
is imported inside the command, so ``--help``, ``--version``, ``--list-models`` and
usage errors answer without importing torch or transformers.
"""

from __future__ import annotations

import click

from .common import output_guard, output_options, progress, say, tool, tool_info, warn

EXAMPLE = """\
moe-trace models/olmoe corpus.jsonl --max-length 256 -o trace.msgpack.zst
moe-trace models/olmoe corpus.jsonl --shard 3/64 --resume -o shards/3.msgpack.zst   # one SLURM array task
cat shards/*.msgpack.zst | moe-sample ...                                          # shards join with cat"""


def list_models(ctx, param, value) -> None:
    """``--list-models``: one line per adapter of the registry (built-ins and installed plugins)."""
    if not value or ctx.resilient_parsing:
        return
    from ..models.registry import adapter_table

    rows = adapter_table()
    columns = [[row["name"] for row in rows], [",".join(row["model_types"]) for row in rows],
               [row["package"] for row in rows]]
    widths = [max((len(cell) for cell in column), default=0) for column in columns]
    for index, row in enumerate(rows):
        cells = [column[index].ljust(width) for column, width in zip(columns, widths)]
        click.echo("  ".join([*cells, row["summary"]]).rstrip())
    ctx.exit()


@tool("moe-trace", example=EXAMPLE)
@click.argument("model", type=click.Path(exists=True, file_okay=False))  # exists: checked before torch loads
@click.argument("corpus", required=False, default="-", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@output_options(default_format="msgpack")
@click.option("--text-field", default="text", show_default=True, help="JSON-lines field holding the text.")
@click.option("--id-field", default="id", show_default=True,
              help="JSON-lines field holding the document id (default: CORPUS:LINE).")
@click.option("--max-length", default=None, type=click.IntRange(1),
              help="Tokens per window (default: 512 or the model's context if shorter); longer documents are "
                   "cut into consecutive windows.")
@click.option("--batch-tokens", default=None, type=click.IntRange(1),
              help="Padded tokens per batch (windows are sorted by length first; default 2048 on CPU, where "
                   "bigger batches are no faster and cost memory, 8192 on a GPU).")
@click.option("--batch-size", default=None, type=click.IntRange(1),
              help="Windows per batch (instead of --batch-tokens). In bfloat16/float16 (--dtype auto on a "
                   "bf16 checkpoint) padding changes the rounding, as in plain transformers. Against "
                   "--batch-size 1 (bench/bench_bf16_batching.py, bf16): OLMoE gates differ by up to 1.1e-2 "
                   "relative (99.9% within 5.7e-3) and 0.06% of selected experts flip at near-ties; "
                   "DeepSeek-V3 99.9% within 1.2e-3, 0.04% flipped; 1.9e-2 was seen on another OLMoE. "
                   "float32: below 1e-6, none flipped. --batch-size 1 (about 3x slower on CPU) or --dtype "
                   "float32 avoids it; the header's reduced_precision_padding records a padded "
                   "reduced-precision run.")
@click.option("--sort-buffer", default=1024, show_default=True, type=click.IntRange(1),
              help="Windows sorted by length together (bounds memory).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True, help="Model weights dtype.")
@click.option("--device", default="cpu", show_default=True, help="torch device (cpu, cuda, cuda:1, mps).")
@click.option("--device-map", default=None, help="'auto' spreads a large model over the GPUs (accelerate).")
@click.option("--logit-lens", "logit_lens", default=0, show_default=True, type=click.IntRange(0),
              help="Also record the top-K tokens each selected expert's output promotes.")
@click.option("--top-k", "top_k", default=None, type=click.IntRange(1), metavar="K",
              help="Make every router select K experts per token instead of the model's own k (the forward "
                   "uses K experts; renormalising families divide the K selected probabilities by their sum). "
                   "The header's top_k is then K and top_k_override records it (paper 000 Insight 1: LDS "
                   "against active experts). Not for MONET.")
@click.option("--precision", type=click.Choice(["8", "11", "24"]), default="8", show_default=True,
              callback=lambda ctx, param, value: int(value),
              help="Significant bits of gates and contributions on disk: 8 (float16 rounded to bfloat16 "
                   "precision, smallest), 11 (float16), 24 (float32, exact).")
@click.option("--shard", default=None, metavar="I/N", help="Trace only slice I of N (0-based) of the corpus.")
@click.option("--shard-by", type=click.Choice(["index", "hash"]), default="index", show_default=True,
              help="Slice by document index mod N, or by a hash of the document id.")
@click.option("--resume", is_flag=True, help="Continue a killed run from OUTPUT.partial (needs -o).")
@click.option("--list-models", is_flag=True, expose_value=False, is_eager=True, callback=list_models,
              help="List the model families moe-trace knows (its adapters: built in and from installed "
                   "plugins) and exit.")
@output_guard(resume_flag="resume")
def command(model, corpus, output, fmt, uncompressed, **options):
    """Trace which experts every token of CORPUS is routed to in MODEL.

    MODEL is a local transformers MoE checkpoint directory with its tokenizer,
    of any family --list-models lists (an adapter each; other packages add
    families through the `moetools.adapters` entry points). CORPUS (default stdin) is JSON lines (the --text-field holds the
    text, --id-field the id, every other field is passed through as metadata)
    or plain text, one document per line. Lines that cannot be used (invalid
    UTF-8 or JSON, no text field) are skipped with a warning naming them, and
    listed in the end record.

    Writes a `trace` stream (formats/trace.md): per window of --max-length
    tokens its document id, offset, metadata, token ids and pieces; per MoE
    layer and token the selected experts, their gates g and contributions
    g*||E_i(x)||_2; per layer the sum of the full router distribution over the
    window; with --logit-lens K the top-K tokens of each expert output.

    The expert outputs are measured inside the model's own fused experts
    computation: the experts run once, and the model computes exactly what it
    computes untraced. A checkpoint with quantized weights (GPT-OSS MXFP4,
    block FP8) is traced as transformers computes it after loading it on this
    machine (on a CPU: dequantized to bf16); the header's quantized_weights
    says which.

    Clusters: --shard I/N takes a deterministic slice; N array tasks write N
    files that `cat` joins into one valid stream. Output goes to OUTPUT.partial
    and is renamed when complete; rerun a killed task with --resume to continue
    after its last complete record. The SLURM recipe (a job array of N tasks,
    then a dependent job that joins the shards with cat and checks them with
    moe-cat --check) is in EXAMPLES of man moe-trace; its scripts are installed
    in the directory `python -m moetools.cluster` prints.
    """
    from ..trace import run_trace

    run_trace(model, corpus, output=output, fmt=fmt, uncompressed=uncompressed, **options,
              tool=tool_info(), log=say, warn=warn, progress=progress)


main = command.main
