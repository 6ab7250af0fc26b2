"""Domain Advantage Score for das-two-stage (paper 003 §2, eq. 1-2, and RC, eq. 4-5).

The routing sums come from the project's tracer (:meth:`moetools.models.Adapter.capture`:
``prob_sum``, the full router distribution summed over each sequence's real tokens, exactly what
moe-trace writes); DAS, C-DAS@k and RC are moe-score's functions (:mod:`moetools.score.metrics`)
on those sums, so das-two-stage and ``moe-score`` compute the same numbers.
"""

from __future__ import annotations

import numpy as np
import torch

from ..score import metrics


@torch.no_grad()
def routing_sums(model, adapter, examples, batch_size: int = 8, max_rows: int | None = None) -> tuple[np.ndarray, int]:
    """(Σ_t p(x_t) per layer and expert (L, E) float64, |T|) over the real tokens of ``examples``
    (all rows, or the first ``max_rows``). MONET: composed experts, rows summing to H per token."""
    was_training = model.training
    model.eval()
    rows = len(examples) if max_rows is None else min(len(examples), max_rows)
    device = next(model.parameters()).device
    total, tokens = None, 0
    with adapter.capture() as capture:
        for start in range(0, rows, batch_size):
            ids = examples.input_ids[start:min(rows, start + batch_size)].to(device)
            mask = examples.attention_mask[start:min(rows, start + batch_size)].to(device)
            model(input_ids=ids, attention_mask=mask, use_cache=False)
            sums = torch.stack([layer["prob_sum"].double().sum(0) for layer in capture.take(mask)])  # (L, E)
            total = sums if total is None else total + sums
            tokens += int(mask.sum())
    model.train(was_training)
    return total.numpy(), tokens


def mean_routing(model, adapter, examples, batch_size: int = 8, max_rows: int | None = None) -> np.ndarray:
    """(L, E) mean routing score per token (moe-score's ``mean_routing_score``)."""
    return metrics.mean_routing_score(*routing_sums(model, adapter, examples, batch_size, max_rows))


def domain_advantage(domain: tuple[np.ndarray, int], general: tuple[np.ndarray, int]) -> np.ndarray:
    """DAS (003 eq. 1) from the (sums, tokens) of the domain and the general data, (L, E)."""
    return metrics.domain_advantage(domain[0], domain[1], general[0], general[1])


def top_experts(scores: np.ndarray, k: int) -> list[list[int]]:
    """The k experts of highest score per layer (ties: lower id first), best first."""
    return [[int(i) for i in np.lexsort((np.arange(row.size), -np.nan_to_num(row, nan=-np.inf)))[:k]]
            for row in scores]


def cumulative_das(das: np.ndarray, k: int) -> float:
    """C-DAS@k (003 eq. 2), summed over layers (moe-score's ``cumulative_das``)."""
    return metrics.cumulative_das(das, k)[1]


def routing_consistency(before: np.ndarray, after: np.ndarray) -> float:
    """RC (003 eq. 4-5) between mean routing scores (L, E) before and after tuning."""
    return metrics.routing_consistency(before, after)[1]


__all__ = ["cumulative_das", "domain_advantage", "mean_routing", "routing_consistency", "routing_sums",
           "top_experts"]
