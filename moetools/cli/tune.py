"""moe-tune: fine-tune only the experts that matter, and merge the result (logic: ``moetools.tune``)."""

from __future__ import annotations

import click

from .common import FINITE_FLOAT, ToolGroup, output_guard, progress, say, subcommand_verbosity, tool_group
from .training_options import training_options

EXAMPLE = """\
moe-tune model/ --data medical.train.jsonl --eval medical.val.jsonl general.val.jsonl \\
    --mode experts --experts medical.json -o tuned/
moe-tune model/ --data medical.train.jsonl --mode das-two-stage --general general.jsonl --top 6 -o tuned/
torchrun --nproc-per-node 2 -m moetools.tune model/ --data medical.train.jsonl --mode lora -o tuned/
torchrun --nproc-per-node 2 -m moetools.tune model/ --data medical.train.jsonl --mode full --fsdp -o tuned/
moe-tune merge tuned/ -o merged/"""

TRAIN_FORCE_HELP = ("Start over in an existing OUTPUT this suite wrote: it is renamed to OUTPUT.old and removed "
                    "when the new run is complete (without --force or --resume an existing OUTPUT is refused).")
MODES = ("full", "experts", "attention-router", "das-two-stage", "lora", "lora-experts")  # = moetools.tune.MODES


class TuneGroup(ToolGroup):
    """``moe-tune MODEL ...`` trains (the ``train`` subcommand, implied); ``moe-tune merge ...`` merges."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help", "--version"):
            args = ["train", *args]
        return super().parse_args(ctx, expand_eval(args))


def expand_eval(args: list[str]) -> list[str]:
    """``--eval A B`` -> ``--eval A --eval B``: files after --eval up to the next option (a directory
    among them is the MODEL argument, not an eval file)."""
    import os

    expanded, index = [], 0
    while index < len(args):
        expanded.append(args[index])
        if args[index] == "--eval":
            index += 1
            taken = 0
            while index < len(args) and not args[index].startswith("-"):
                if taken and os.path.isdir(args[index]):
                    break
                expanded += ([] if not taken else ["--eval"]) + [args[index]]
                taken, index = taken + 1, index + 1
            continue
        index += 1
    return expanded


@tool_group("moe-tune", example=EXAMPLE)
def command():
    """Fine-tune chosen parts of an MoE or MONET model; merge the adapter.

    moe-tune MODEL --data FILE -o OUT [options] trains (see `moe-tune train --help`);
    moe-tune merge ADAPTER -o OUT writes a standard checkpoint. Modes: full; experts
    (only the experts of --experts, every other parameter and every unselected
    expert's slice of a fused tensor bit-for-bit unchanged, optimizer state only for
    what trains); attention-router (paper 003 stage 1); das-two-stage; lora (peft,
    r=16, alpha=32); lora-experts (LoRA on the chosen experts only).
    A base with quantized weights (quantization_config: MXFP4, block FP8) is
    refused (exit 2): dequantize it first. merge writes the base's dtype and
    sharding.

    Several GPUs: torchrun -m moetools.tune (data parallel). Several nodes under
    SLURM: the recipe in EXAMPLES of man moe-tune (srun torchrun on every node,
    then a dependent job that merges); its scripts are installed in the
    directory `python -m moetools.cluster` prints.
    """


command.__class__ = TuneGroup  # tool_group builds a ToolGroup; this one implies `train`


@command.command("train")
@subcommand_verbosity
@click.argument("model", type=click.Path(file_okay=False))
@click.option("--data", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Training data: JSON lines of text ({\"text\": ...}, packed) or of chats ({\"messages\": "
                   "[...]}: loss on assistant tokens only). A file where no token carries a loss (every "
                   "answer beyond --seq-len) is refused, as is such an --eval or --general file.")
@click.option("--eval", "eval_files", multiple=True, type=click.Path(dir_okay=False),
              help="Evaluation files (--eval A B, or --eval A --eval B): loss per file and per domain every "
                   "--eval-every steps.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Output directory: the adapter (tune.json, adapter.safetensors or peft's files, experts.json), "
                   "tune_log.jsonl, checkpoint/.")
@click.option("--mode", type=click.Choice(MODES), default="experts", show_default=True, help="What trains.")
@click.option("--experts", type=click.Path(dir_okay=False, allow_dash=True),
              help="experts.json (moe-select's or ESFT's): the experts of --mode experts / lora-experts.")
@click.option("--general", type=click.Path(dir_okay=False), help="das-two-stage: general data DAS contrasts with.")
@click.option("--top", default=6, show_default=True, type=click.IntRange(min=1),
              help="das-two-stage: experts kept per layer by DAS (and k of C-DAS@k).")
@click.option("--stage1-steps", default=100, show_default=True, type=click.IntRange(min=1),
              help="das-two-stage: attention + router steps before choosing experts.")
@click.option("--stage2", type=click.Choice(["experts", "lora-experts"]), default="experts", show_default=True,
              help="das-two-stage: how the chosen experts train.")
@click.option("--das-rows", default=64, show_default=True, type=click.IntRange(min=1),
              help="das-two-stage: sequences of each set traced for DAS.")
@training_options(steps=100, lr=1e-4, weight_decay=0.0, eval_every=50, checkpoint_every=100,
                  help={"steps": "Optimizer steps (das-two-stage: of stage 2).",
                        "warmup": "Warmup steps per stage [5% of its steps].",
                        "eval_batches": "Eval batches per file.",
                        "resume": "Continue from OUTPUT/checkpoint exactly.",
                        "max_minutes": "Stop (with a checkpoint) after this long.",
                        "fsdp": "Under torchrun (2 or more processes), --mode full or attention-router: shard "
                                "parameters, gradients and optimizer state with FSDP2 (per decoder layer) "
                                "instead of DDP; same batches, logs, checkpoints and adapter."})
@click.option("--lora-rank", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--lora-alpha", default=32.0, show_default=True, type=FINITE_FLOAT)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
              help="Weights while training (on a GPU with bf16, the forward runs under bf16 autocast).")
@click.option("--text-field", default="text", show_default=True, help="JSON field holding the text.")
@click.option("--domain-field", default="domain", show_default=True, help="JSON field naming the domain.")
@output_guard(directory=True, resume_flag="resume", pass_force=True, force_help=TRAIN_FORCE_HELP)
def train_command(model, data, eval_files, output, **options):
    """Fine-tune MODEL on --data; write an adapter to OUTPUT.

    Under torchrun (`torchrun --nproc-per-node N -m moetools.tune ...`, same flags) it trains
    data-parallel (DDP; gloo on CPU), or with --fsdp sharded with FSDP2, with the same
    results as one process. MONET layers that share one router (moe_groups > 1): an expert
    of --experts trains in every layer of its group (a note on stderr says so).
    """
    from ..tune import TuneOptions, tune

    tune_options = TuneOptions(model=model, data=data, output=output, eval=list(eval_files), **options)

    def on_log(record):
        if record["type"] == "eval" and record.get("eval_loss") is not None:
            say(f"step {record['step']}: eval loss {record['eval_loss']:.4f}")
        elif record["type"] == "cdas":
            say(f"step {record['step']}: C-DAS@{record['k']} {record['cdas']:.4f}")

    summary = tune(tune_options, on_log=on_log, progress=progress, on_note=lambda text: say(f"note: {text}"))
    say(f"{summary['steps']} steps, {summary['trainable_parameters']} trainable parameters -> {output}")


@command.command("merge")
@subcommand_verbosity
@click.argument("adapter", type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Directory for the merged checkpoint (written as OUTPUT.partial, then renamed).")
@click.option("--base", type=click.Path(file_okay=False), help="The base model [the path in ADAPTER/tune.json].")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True, help="Weights of the merged checkpoint (auto: the base checkpoint's, e.g. bf16; "
                   "shards like the base's).")
@output_guard(directory=True, pass_force=True)
def merge_command(adapter, output, base, dtype, force):
    """Merge ADAPTER into its base model; AutoModelForCausalLM.from_pretrained loads OUTPUT.

    The merged config carries `moetools_tuned` (base fingerprint, mode, adapter), so the
    merged model never passes for its base. A merged MONET model carries
    configuration_monet.py, modeling_monet.py and an auto_map: without moetools, load it
    with trust_remote_code=True.
    """
    from ..tune import merge

    provenance = merge(adapter, output, base=base, dtype=dtype, force=force)
    say(f"{provenance['mode']} adapter merged into {provenance['base_name']} -> {output}")


main = command.main
