"""The settings monet-train and moe-tune share (the CLI bundle is ``moetools.cli.training_options``) and
the checks on them that need no process group."""

from __future__ import annotations

import math

from ..errors import UsageError
from .distributed import check_fsdp, world_size
from .stopping import injected_step_delay

FLOAT_SETTINGS = ("lr", "min_lr", "weight_decay", "grad_clip", "max_minutes")


def check_loop_options(options, *, more_floats: tuple[str, ...] = ()) -> None:
    """Finite floats, positive counts, a valid step-delay testing hook, ``--fsdp`` only under torchrun, and a global batch that splits
    evenly over processes x ``--grad-accum`` micro-batches."""
    for name in (*FLOAT_SETTINGS, *more_floats):
        value = getattr(options, name)
        if value is not None and not math.isfinite(value):
            raise UsageError(f"--{name.replace('_', '-')} {value} is not a finite number")
    if options.steps < 1 or options.batch_size < 1 or options.seq_len < 2 or options.grad_accum < 1:
        raise UsageError("--steps, --batch-size, --grad-accum must be at least 1 and --seq-len at least 2")
    check_fsdp(options.fsdp)
    injected_step_delay()  # a bad testing hook value is refused before any output exists
    world = world_size()
    if options.batch_size % (world * options.grad_accum):
        raise UsageError(f"--batch-size {options.batch_size} is not divisible by {world} processes "
                         f"x --grad-accum {options.grad_accum}")


__all__ = ["FLOAT_SETTINGS", "check_loop_options"]
