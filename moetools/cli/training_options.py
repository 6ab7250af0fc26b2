"""The options monet-train and moe-tune share (``moetools.training``): one bundle, the same names, units
and checks in both; each tool gives its own defaults and the few help texts that differ."""

from __future__ import annotations

import click

from .common import FINITE_FLOAT, finite_float

HELP = {
    "steps": "Optimizer steps.",
    "batch_size": "Global batch in sequences (split over torchrun processes and --grad-accum).",
    "grad_accum": "Micro-batches per optimizer step: each process runs its rows in this many forward/backward "
                  "passes (less activation memory; the same step but for per-batch statistics such as MONET's "
                  "BatchNorm routing and a load-balancing loss).",
    "seq_len": "Tokens per sequence.",
    "lr": "Peak learning rate (AdamW).",
    "min_lr": "Learning rate at the end of the cosine.",
    "warmup": "Warmup steps [5% of --steps].",
    "weight_decay": "AdamW weight decay (not on embeddings, norms, biases).",
    "grad_clip": "Gradient norm clip.",
    "seed": "Seed of the batch order and of any initialisation.",
    "eval_every": "Steps between evaluations.",
    "eval_batches": "Eval batches per domain.",
    "checkpoint_every": "Steps between checkpoints.",
    "max_minutes": "Stop (checkpoint + save) after this long.",
    "stop_at_step": "Stop after this step with a checkpoint (split a run over jobs; continue with --resume).",
    "resume": "Continue from OUTPUT/checkpoint exactly (weights that train, optimizer, schedule, RNG, data "
              "position).",
    "fsdp": "Under torchrun (2 or more processes): shard parameters, gradients and optimizer state with FSDP2 "
            "(per decoder layer) instead of DDP; same batches, logs, checkpoints and output.",
}


def training_options(*, steps: int, lr: float, weight_decay: float, eval_every: int, checkpoint_every: int,
                     help: dict[str, str] | None = None):
    """A decorator adding the shared options, with this tool's defaults and help overrides."""
    texts = {**HELP, **(help or {})}
    options = [
        click.option("--steps", default=steps, show_default=True, type=click.IntRange(min=1), help=texts["steps"]),
        click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
                     help=texts["batch_size"]),
        click.option("--grad-accum", default=1, show_default=True, type=click.IntRange(min=1),
                     help=texts["grad_accum"]),
        click.option("--seq-len", default=256, show_default=True, type=click.IntRange(min=2), help=texts["seq_len"]),
        click.option("--lr", default=lr, show_default=True, type=FINITE_FLOAT, help=texts["lr"]),
        click.option("--min-lr", default=0.0, show_default=True, type=FINITE_FLOAT, help=texts["min_lr"]),
        click.option("--warmup", type=click.IntRange(min=0), help=texts["warmup"]),
        click.option("--weight-decay", default=weight_decay, show_default=True, type=FINITE_FLOAT,
                     help=texts["weight_decay"]),
        click.option("--grad-clip", default=1.0, show_default=True, type=FINITE_FLOAT, help=texts["grad_clip"]),
        click.option("--seed", default=0, show_default=True, type=int, help=texts["seed"]),
        click.option("--eval-every", default=eval_every, show_default=True, type=click.IntRange(min=1),
                     help=texts["eval_every"]),
        click.option("--eval-batches", default=8, show_default=True, type=click.IntRange(min=1),
                     help=texts["eval_batches"]),
        click.option("--checkpoint-every", default=checkpoint_every, show_default=True, type=click.IntRange(min=1),
                     help=texts["checkpoint_every"]),
        click.option("--max-minutes", type=finite_float(min=0), help=texts["max_minutes"]),
        click.option("--stop-at-step", type=click.IntRange(min=1), help=texts["stop_at_step"]),
        click.option("--resume", is_flag=True, help=texts["resume"]),
        click.option("--fsdp", is_flag=True, help=texts["fsdp"]),
    ]

    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


__all__ = ["HELP", "training_options"]
