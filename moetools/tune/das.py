"""Domain Advantage Score for das-two-stage (paper 003 §2, eq. 1-2, and RC, eq. 4-5).

The mean routing score of every expert over a set of tokens comes from the project's tracer
(:meth:`moetools.models.Adapter.capture`: ``prob_sum``, the full router distribution summed over
each sequence's real tokens, as moe-trace writes it), accumulated per domain with
:class:`moetools.score.specialisation.DomainRouting` (moe-score's code, so DAS here and in
moe-score see the same numbers); DAS, C-DAS@k and RC are the paper's formulas on those means.
"""

from __future__ import annotations

import numpy as np
import torch

from ..score.specialisation import DomainRouting


@torch.no_grad()
def mean_routing(model, adapter, examples, batch_size: int = 8, max_rows: int | None = None) -> np.ndarray:
    """(L, E) mean router probability per real token of ``examples`` (all rows, or the first ``max_rows``)."""
    routing = DomainRouting()
    was_training = model.training
    model.eval()
    rows = len(examples) if max_rows is None else min(len(examples), max_rows)
    device = next(model.parameters()).device
    with adapter.capture() as capture:
        for start in range(0, rows, batch_size):
            ids = examples.input_ids[start:min(rows, start + batch_size)].to(device)
            mask = examples.attention_mask[start:min(rows, start + batch_size)].to(device)
            model(input_ids=ids, attention_mask=mask, use_cache=False)
            layers = capture.take(mask)
            prob_sum = torch.stack([layer["prob_sum"] for layer in layers], dim=1)  # (B, L, E)
            for row in range(ids.shape[0]):
                tokens = int(mask[row].sum())
                routing.add({"meta": {"domain": "data"}, "tokens": np.zeros(tokens),
                             "prob_sum": prob_sum[row].double().numpy()})
    model.train(was_training)
    return routing.mean_probability()[1][0]


def domain_advantage(domain: np.ndarray, general: np.ndarray) -> np.ndarray:
    """DAS (003 eq. 1): mean routing score on the domain's tokens minus on the general tokens, (L, E)."""
    return domain - general


def top_experts(das: np.ndarray, k: int) -> list[list[int]]:
    """The k experts of highest DAS per layer (ties: lower id first), best first."""
    return [[int(i) for i in np.lexsort((np.arange(row.size), -row))[:k]] for row in das]


def cumulative_das(das: np.ndarray, k: int) -> float:
    """C-DAS@k (003 eq. 2): Σ_layers Σ_{j in top-k} max(DAS, 0) / Σ_j max(DAS, 0); a layer with no
    positive DAS adds 0."""
    positive = np.maximum(das, 0.0)
    total = 0.0
    for layer, ids in enumerate(top_experts(das, k)):
        denominator = positive[layer].sum()
        if denominator > 0:
            total += positive[layer, ids].sum() / denominator
    return float(total)


def routing_consistency(before: np.ndarray, after: np.ndarray) -> float:
    """RC (003 eq. 4-5): mean over layers and experts of (ḡ_after - ḡ_before)², the mean routing
    scores on the same domain data before and after tuning."""
    return float(np.mean((after - before) ** 2))


__all__ = ["cumulative_das", "domain_advantage", "mean_routing", "routing_consistency", "top_experts"]
