"""The optimizer both loops use: AdamW (betas 0.9, 0.95) with no weight decay on embeddings, norms and
biases, and its warmup + cosine schedule (:class:`.checkpoint.WarmupCosine`)."""

from __future__ import annotations

import torch

from .checkpoint import WarmupCosine


def adamw(named_parameters, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over ``(name, parameter)`` pairs: decay on matrices that are not embeddings, none elsewhere."""
    named = list(named_parameters)
    decay = [p for n, p in named if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in named if not (p.ndim >= 2 and "embed" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


def schedule(*, lr: float, min_lr: float, warmup: int | None, steps: int) -> WarmupCosine:
    """Warmup (default: 5% of ``steps``, at least 1) then cosine to ``min_lr`` at ``steps``."""
    return WarmupCosine(lr, warmup if warmup is not None else max(1, steps // 20), steps, min_lr)


__all__ = ["adamw", "schedule"]
