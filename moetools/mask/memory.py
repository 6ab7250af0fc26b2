"""Masking in memory: ``with masked(model, experts): model(...)`` (formats/mask.md semantics).

    from moetools.mask import masked
    with masked(model, {3: [0, 5], 7: [2]}):      # or an ExpertSet from moetools.select.read_experts
        logits = model(input_ids).logits            # masked experts never selected
    # hooks removed: the model routes as before

Router forward hooks (:mod:`moetools.mask.routing`) recompute each masked layer's routing from
the router's own logits with the masked logits at −∞; MONET layers subtract the masked composed
experts' g_ij·E_ij(x). The weights are not touched.
"""

from __future__ import annotations

from contextlib import contextmanager

from .plan import plan_mask
from .routing import attach


def expert_dict(experts) -> dict[int, list[int]]:
    """{layer: [ids]} from an ExpertSet (moetools.select) or a mapping with int/str layer keys."""
    if hasattr(experts, "items") and hasattr(experts, "experts") and not isinstance(experts, dict):
        return {int(layer): list(ids) for layer, ids in experts.items()}
    return {int(layer): [int(i) for i in ids] for layer, ids in dict(experts).items()}


@contextmanager
def masked(model, experts, adapter=None):
    """Mask ``experts`` ({decoder layer: ids}) of ``model`` for the duration of the block.

    Refuses (UsageError, exit 2) ids out of range, a layer masked entirely or left with fewer
    than top-k experts, as moe-mask does. Yields the :class:`moetools.mask.plan.MaskPlan`.
    """
    if adapter is None:
        from ..models import adapter_for

        adapter = adapter_for(model)
    plan = plan_mask(model, adapter, expert_dict(experts))
    handles = attach(model, plan.masked, plan.routing, plan.num_experts)
    try:
        yield plan
    finally:
        for handle in handles:
            handle.remove()
