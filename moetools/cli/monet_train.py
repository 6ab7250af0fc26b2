"""monet-train: pretrain MONET (or a matched dense / MoE baseline) from JSON lines (logic: ``moetools.train``)."""

from __future__ import annotations

import json

import click

from .common import finite_float, output_guard, progress, say, tool
from .training_options import training_options

EXAMPLE = """\
monet-train --arch monet-vd --data corpus.jsonl -o monet/ --steps 2000 --max-minutes 60
monet-train --data corpus.jsonl -o monet/ --batch-size 64 --grad-accum 8   # 8 micro-batches of 8
torchrun --nproc_per_node 2 $(which monet-train) --data corpus.jsonl -o monet/ --resume
torchrun --nproc_per_node 8 $(which monet-train) --fsdp --data corpus.jsonl -o monet/"""

TRAIN_FORCE_HELP = ("Start over in an existing OUTPUT this suite wrote: it is renamed to OUTPUT.old and removed "
                    "when the new run is complete (without --force or --resume an existing OUTPUT is refused).")

# flag -> model config key
MODEL_FLAGS = {"d_model": "hidden_size", "layers": "num_hidden_layers", "heads": "num_attention_heads",
               "moe_experts": "moe_experts", "moe_heads": "moe_heads", "moe_topk": "moe_topk",
               "moe_dim": "moe_dim", "moe_groups": "moe_groups"}


@tool("monet-train", example=EXAMPLE)
@click.option("--data", required=True, type=click.Path(dir_okay=False),
              help="JSON lines, one document per line.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Output directory: config.json, model.safetensors, tokenizer, training_metadata.json, "
                   "train_log.jsonl, checkpoint/ (MONET: also configuration_monet.py, modeling_monet.py).")
@click.option("--arch", type=click.Choice(["monet-vd", "monet-hd", "llama", "moe"]), default="monet-vd",
              show_default=True, help="MONET vertical/horizontal, or the dense LLaMA / top-k MoE (OLMoE) baseline "
                                      "sized to MONET's active parameters.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="JSON object of model config keys (e.g. hidden_size, moe_experts, num_experts); flags win.")
@click.option("--text-field", default="text", show_default=True, help="JSON field holding the text.")
@click.option("--domain-field", default="domain", show_default=True, help="JSON field naming the domain (eval per domain).")
@click.option("--tokenizer", type=click.Path(file_okay=False), help="A local tokenizer directory; default: train a "
                                                                     "byte-level BPE on the corpus.")
@click.option("--vocab-size", default=4096, show_default=True, type=click.IntRange(min=260),
              help="Vocabulary of the trained tokenizer.")
@click.option("--d-model", type=click.IntRange(min=2), help="Hidden size [256].")
@click.option("--layers", type=click.IntRange(min=1), help="Decoder layers [4].")
@click.option("--heads", type=click.IntRange(min=1), help="Attention heads [4].")
@click.option("--moe-experts", type=click.IntRange(min=1), help="MONET experts per factor, N = this squared [64].")
@click.option("--moe-heads", type=click.IntRange(min=1), help="MONET routing heads [4].")
@click.option("--moe-topk", type=click.IntRange(min=1), help="MONET experts kept per head and factor [4].")
@click.option("--moe-dim", type=click.IntRange(min=1), help="MONET expert hidden size [8].")
@click.option("--moe-groups", type=click.IntRange(min=1), help="Layers sharing one routing [4].")
@training_options(steps=1000, lr=5e-4, weight_decay=0.1, eval_every=100, checkpoint_every=200)
@click.option("--eval-fraction", default=0.05, show_default=True, type=finite_float(0, 0.5),
              help="Share of documents held out for eval.")
@output_guard(directory=True, resume_flag="resume", pass_force=True, force_help=TRAIN_FORCE_HELP)
def command(data, output, arch, config_file, **options):
    """Pretrain MONET, or a matched baseline, from JSON lines text.

    Packs the corpus into --seq-len blocks, trains with AdamW, warmup + cosine,
    gradient clipping, gradient accumulation (--grad-accum) and (on GPU) bf16
    autocast, evaluates per domain, logs JSON
    lines to OUTPUT/train_log.jsonl, checkpoints every --checkpoint-every steps
    without pickle, and writes a directory that AutoModelForCausalLM loads. A MONET
    directory carries configuration_monet.py, modeling_monet.py and an auto_map (as the
    published MONET checkpoints do): without moetools, load it with trust_remote_code=True.
    Under torchrun it trains data-parallel (DDP; gloo on CPU), or with --fsdp
    sharded with FSDP2.
    """
    from ..errors import UsageError
    from ..train import TrainOptions, train

    settings = {}
    if config_file:
        try:
            with open(config_file, encoding="utf-8") as handle:
                settings = json.load(handle)
        except json.JSONDecodeError as error:
            raise UsageError(f"--config {config_file}: not JSON ({error.msg})") from None
        if not isinstance(settings, dict):
            raise UsageError(f"--config {config_file}: expected a JSON object of model config keys")
    for flag, key in MODEL_FLAGS.items():
        if options.get(flag) is not None:
            settings[key] = options[flag]
        options.pop(flag, None)
    train_options = TrainOptions(data=data, output=output, arch=arch, model_settings=settings, **options)

    def on_log(record):
        if record["type"] == "eval" and record.get("eval_loss") is not None:
            say(f"step {record['step']}: eval loss {record['eval_loss']:.4f}")

    with progress("training", total=train_options.steps) as bar:
        metadata = train(train_options, on_log=on_log, progress=bar)
    say(f"{metadata['steps']} steps, {metadata['tokens']} tokens, {metadata['parameters']['total']} parameters "
        f"-> {output}")


main = command.main
