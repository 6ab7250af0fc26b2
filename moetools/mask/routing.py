"""Masked routing for any MoE family, in torch only (no moetools import).

This file is also shipped verbatim inside a masked model directory that needs custom code
(``moetools_mask_routing.py``, formats/mask.md), so it must stay self-contained: it knows no
family by name. What a family's router computes comes from the ``routing`` object of the
directory's ``moe_mask`` record (the adapter's ``mask_routing()``: scoring, order, score bias,
groups, renormalisation, scaling, and where the router sits in the model).

Semantics (formats/mask.md): a masked expert is never selected, and every other gate is what
the family's router computes when the masked experts' router logits are −∞:

- softmax scoring (OLMoE, Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V2, ERNIE-4.5, GPT-OSS):
  the masked logits are −∞, so they leave the softmax's denominator
  (p_i = exp(l_i) / Σ_{j unmasked} exp(l_j));
- sigmoid scoring (DeepSeek-V3): the masked experts' choice scores (sigmoid + correction bias)
  are −∞, so they leave the group scores, the top-k choice and the normalisation over the
  selected experts (DeepSeek-V3 report, eq. 15-16 with s_i removed);
- a score bias added for the choice (DeepSeek-V3, ERNIE-4.5): the masked choice scores are −∞
  (a probability of 0 plus a positive bias would otherwise still win a slot);
- product-key scoring (MONET, paper 004 eq. 7/14): composed expert (i, j) has gate
  g_ij = Σ_h g¹_hi g²_hj; a masked pair's gate is 0 and every other gate is unchanged (MONET
  does not renormalise).

A router forward hook replaces the router's output ``(logits, weights, indices)`` with the masked
routing recomputed from the router's own logits (the hook sees them: every transformers 5 router
returns them first), so the experts module dispatches only to unmasked experts.
"""

from __future__ import annotations

import math
from functools import reduce

import torch
import torch.nn.functional as F

#: the values of a ``routing`` object this file computes (formats/mask.md)
SCORINGS = ("softmax", "sigmoid", "product_key")
ORDERS = {"softmax": ("softmax_then_topk", "topk_then_softmax"), "sigmoid": ("softmax_then_topk",),
          "product_key": ("threshold_then_softmax",)}
GROUP_SCORES = ("max", "top2_sum")
GATE_DTYPES = ("logits", "float32")
FIELDS = ("layers", "block", "router", "scoring", "order", "renormalize", "score_bias", "groups", "top_groups",
          "group_score", "scaling", "topk_sorted", "gate_dtype")


def routing_problem(routing) -> str | None:
    """What is wrong with a ``routing`` object (one line), or None when this file computes it."""
    if not isinstance(routing, dict):
        return "routing is not an object"
    missing = [name for name in FIELDS if name not in routing]
    if missing:
        return f"routing lacks {', '.join(missing)}"
    scoring, order = routing["scoring"], routing["order"]
    if scoring not in SCORINGS:
        return f"routing scoring {scoring!r} is not one of {', '.join(SCORINGS)}"
    if order not in ORDERS[scoring]:
        return f"routing order {order!r} with {scoring} scoring is not one of {', '.join(ORDERS[scoring])}"
    if routing["group_score"] not in GROUP_SCORES:
        return f"routing group_score {routing['group_score']!r} is not one of {', '.join(GROUP_SCORES)}"
    if routing["gate_dtype"] not in GATE_DTYPES:
        return f"routing gate_dtype {routing['gate_dtype']!r} is not one of {', '.join(GATE_DTYPES)}"
    groups, top_groups = routing["groups"], routing["top_groups"]
    if not (isinstance(groups, int) and isinstance(top_groups, int) and 1 <= top_groups <= groups):
        return f"routing groups {groups!r} / top_groups {top_groups!r}: need integers 1 <= top_groups <= groups"
    paths = ("layers", "block") if scoring == "product_key" else ("layers", "block", "router")
    bad = [name for name in paths if not (isinstance(routing[name], str) and routing[name])]
    if bad or not (routing["score_bias"] is None or isinstance(routing["score_bias"], str)):
        return f"routing {', '.join(bad) or 'score_bias'}: not an attribute path"
    return None


def submodule(module, path: str):
    """``module.a.b`` for the dotted ``path`` ``"a.b"``."""
    return reduce(getattr, path.split("."), module)


def logit_mask(num_experts: int, masked, device=None) -> torch.Tensor:
    """(E,) float32: 0 for kept experts, −∞ for masked ones."""
    bias = torch.zeros(num_experts, dtype=torch.float32, device=device)
    if len(masked):
        bias[torch.as_tensor(list(masked), dtype=torch.long, device=device)] = float("-inf")
    return bias


def _group_mask(choice: torch.Tensor, groups: int, top_groups: int, group_score) -> torch.Tensor:
    """Keep only the experts of each token's best ``top_groups`` groups (others −∞ / 0 as the family does)."""
    tokens, experts = choice.shape
    scores = group_score(choice.view(tokens, groups, experts // groups))  # (N, G)
    chosen = torch.topk(scores, k=top_groups, dim=-1, sorted=False)[1]
    keep = torch.zeros_like(scores).scatter_(1, chosen, 1)
    return keep.unsqueeze(-1).expand(-1, groups, experts // groups).reshape(tokens, experts).bool()


def route(routing: dict, router, logits: torch.Tensor, mask: torch.Tensor):
    """The masked routing of one router: ``(masked logits (N, E), weights (N, K), indices (N, K))``.

    ``logits`` (N, E) are the router's own output; ``mask`` (E,) is :func:`logit_mask`; ``routing``
    the family's rule (formats/mask.md). The transformers 5 routers' forward with the mask added
    where the logits enter: top-k on the logits then a softmax over those k (``topk_then_softmax``),
    or scores over all experts (+ score bias for the choice, best groups only), top-k, the selected
    scores as gates (renormalised, scaled).
    """
    top_k = int(router.top_k)
    mask = mask.to(logits.device)
    masked_logits = logits + mask.to(logits.dtype)
    if routing["order"] == "topk_then_softmax":
        values, indices = torch.topk(masked_logits, top_k, dim=-1)
        return masked_logits, F.softmax(values, dim=1, dtype=values.dtype), indices
    if routing["scoring"] == "sigmoid":
        scores = logits.float().sigmoid()
    else:
        scores = torch.softmax(logits.float() + mask, dim=-1)
    choice = scores
    if routing["score_bias"]:
        choice = choice + submodule(router, routing["score_bias"]).float().reshape(-1)
    choice = choice + mask
    if routing["groups"] > 1:
        group_score = ((lambda g: g.max(dim=-1).values) if routing["group_score"] == "max"
                       else (lambda g: g.topk(2, dim=-1)[0].sum(dim=-1)))
        keep = _group_mask(choice, routing["groups"], routing["top_groups"], group_score)
        choice = choice.masked_fill(~keep, float("-inf"))
    indices = torch.topk(choice, top_k, dim=-1, sorted=bool(routing["topk_sorted"]))[1]
    weights = scores.gather(1, indices)
    if routing["renormalize"]:
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp(min=1e-20)
    if routing["scaling"] != 1.0:
        weights = weights * routing["scaling"]
    if routing["gate_dtype"] == "logits":
        weights = weights.to(logits.dtype)
    return masked_logits, weights, indices


def router_hook(routing: dict, masked_ids, num_experts: int):
    """A forward hook for a router module that returns the masked routing.

    The (E,) mask is built on the logits' device at the first call (a model may be
    created on the meta device and filled later, as ``from_pretrained`` does).
    """
    ids, masks = list(masked_ids), {}

    def hook(module, args, output):
        logits = output[0].reshape(-1, output[0].shape[-1])  # (N, E)
        if logits.device not in masks:
            masks[logits.device] = logit_mask(num_experts, ids, device=logits.device)
        return route(routing, module, logits, masks[logits.device])

    return hook


# -- MONET: composed experts (i, j), gate g_ij = Σ_h g1_hi g2_hj ---------------------------------

def monet_pair_outputs(moe, rows: torch.Tensor, cols: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """E_ij(x) for pairs (rows[p], cols[p]): x (B, T, D) -> (B, T, P, D) (VD eq. 13, HD eq. 6)."""
    experts = moe.experts
    if hasattr(moe, "u"):  # horizontal: E_ij = V_j s(U_i x + b1_i) + b2_j
        hidden = moe.hidden(x)[..., rows, :]  # (B, T, P, M)
        v = moe.v.weight.view(-1, experts, moe.moe_dim)[:, cols]  # (D, P, M)
        return torch.einsum("btpm,dpm->btpd", hidden, v) + moe.b[cols]
    x1, x2 = moe.hidden(x)  # (B, T, E, M/2) each
    a1, a2 = x1[..., rows, :], x2[..., cols, :]  # (B, T, P, M/2)

    def block(linear, index, activation):  # V_index · activation: (B, T, P, D/2)
        return torch.einsum("btpm,dpm->btpd", activation, linear.weight.view(-1, experts, moe.half_dim)[:, index])

    top = block(moe.v11, rows, a1) + block(moe.v12, rows, a2) + moe.b1[rows]
    bottom = block(moe.v21, cols, a1) + block(moe.v22, cols, a2) + moe.b2[cols]
    return torch.cat((top, bottom), dim=-1)


def monet_hook(masked_ids, experts_per_factor: int, chunk: int = 64):
    """A forward hook on a MONET layer's experts module: subtracts Σ_(i,j) masked g_ij E_ij(x)."""
    ids = sorted(int(i) for i in masked_ids)  # a list: the model may be built under a meta-device context

    def hook(module, args, output):
        x, g1, g2 = args  # (B, T, D), (B, T, H, E) x2
        g1, g2 = g1.to(x.dtype), g2.to(x.dtype)
        removed = torch.zeros_like(output)
        for start in range(0, len(ids), chunk):
            part = torch.tensor(ids[start:start + chunk], dtype=torch.long, device=x.device)
            rows, cols = part // experts_per_factor, part % experts_per_factor
            gates = torch.einsum("bthp,bthp->btp", g1[..., rows], g2[..., cols])  # (B, T, P): g_ij
            removed = removed + torch.einsum("btp,btpd->btd", gates, monet_pair_outputs(module, rows, cols, x))
        return output - removed

    return hook


def attach(model, masked: dict, routing: dict, num_experts: int) -> list:
    """Register masking hooks on ``model`` for ``{decoder layer: [masked ids]}``; returns the handles.

    ``routing``: the ``moe_mask`` record's ``routing`` object; ``num_experts``: experts per MoE layer
    (MONET: composed, E²). ValueError for a ``routing`` object this file does not compute.
    """
    problem = routing_problem(routing)
    if problem:
        raise ValueError(f"moe_mask: {problem}")
    layers = submodule(model, routing["layers"])
    handles = []
    for layer, ids in masked.items():
        if not len(ids):
            continue
        block = submodule(layers[int(layer)], routing["block"])
        if routing["scoring"] == "product_key":
            handles.append(block.register_forward_hook(monet_hook(ids, math.isqrt(int(num_experts)))))
            continue
        router = submodule(block, routing["router"])
        handles.append(router.register_forward_hook(router_hook(routing, ids, int(num_experts))))
    return handles
