"""Masked routing for every MoE family moetools knows, in torch only (no moetools import).

This file is also shipped verbatim inside a masked model directory that needs custom code
(``moetools_mask_routing.py``, formats/mask.md), so it must stay self-contained.

Semantics (formats/mask.md): a masked expert is never selected, and every other gate is what
the family's router computes when the masked experts' router logits are −∞:

- softmax families (OLMoE, Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V2, ERNIE-4.5, GPT-OSS):
  the masked logits are −∞, so they leave the softmax's denominator
  (p_i = exp(l_i) / Σ_{j unmasked} exp(l_j));
- sigmoid-scored DeepSeek-V3: the masked experts' choice scores (sigmoid + correction bias)
  are −∞, so they leave the group scores, the top-k choice and the normalisation over the
  selected experts (DeepSeek-V3 report, eq. 15-16 with s_i removed);
- ERNIE-4.5's choice score p_i + bias_i is −∞ as well (a softmax probability of 0 plus a
  positive bias would otherwise still win a slot);
- MONET (paper 004 eq. 7/14): composed expert (i, j) has gate g_ij = Σ_h g¹_hi g²_hj; a masked
  pair's gate is 0 and every other gate is unchanged (MONET does not renormalise).

A router forward hook replaces the router's output ``(logits, weights, indices)`` with the masked
routing recomputed from the router's own logits (the hook sees them: every transformers 5 router
returns them first), so the experts module dispatches only to unmasked experts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: routing rule of each model type (transformers' model_type names)
KINDS = {"olmoe": "softmax_topk", "qwen2_moe": "softmax_topk", "qwen3_moe": "softmax_topk",
         "mixtral": "softmax_topk_renorm", "deepseek_v2": "deepseek_v2", "deepseek_v3": "deepseek_v3",
         "ernie4_5_moe": "ernie", "gpt_oss": "gpt_oss", "monet": "monet"}
#: attribute of the MoE block holding the router (default "gate")
ROUTER_ATTRIBUTE = {"gpt_oss": "router"}


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


def route(kind: str, router, logits: torch.Tensor, mask: torch.Tensor):
    """The masked routing of one router: ``(masked logits (N, E), weights (N, K), indices (N, K))``.

    ``logits`` (N, E) are the router's own output; ``mask`` (E,) is :func:`logit_mask`. Each branch
    is the family's transformers 5 router forward with the mask added where its logits enter.
    """
    top_k = int(router.top_k)
    mask = mask.to(logits.device)
    masked_logits = logits + mask.to(logits.dtype)
    if kind in ("softmax_topk", "softmax_topk_renorm"):
        probs = torch.softmax(masked_logits.float(), dim=-1)
        weights, indices = torch.topk(probs, top_k, dim=-1)
        if kind == "softmax_topk_renorm" or getattr(router, "norm_topk_prob", False):
            weights = weights / weights.sum(dim=-1, keepdim=True)
        if kind == "softmax_topk":
            weights = weights.to(logits.dtype)
        return masked_logits, weights, indices
    if kind == "deepseek_v2":
        scores = (logits.float() + mask).softmax(dim=-1, dtype=torch.float32)
        if router.topk_method == "group_limited_greedy":
            keep = _group_mask(scores, router.num_group, router.topk_group, lambda g: g.max(dim=-1).values)
            scores = scores.masked_fill(~keep, 0.0)
        weights, indices = torch.topk(scores, k=top_k, dim=-1, sorted=False)
        return masked_logits, weights * router.routed_scaling_factor, indices
    if kind == "deepseek_v3":
        scores = logits.float().sigmoid()  # the gates of the selected experts (eq. 15)
        choice = scores + router.e_score_correction_bias + mask  # −∞: out of groups and of the top-k
        keep = _group_mask(choice, router.num_group, router.topk_group,
                           lambda g: g.topk(2, dim=-1)[0].sum(dim=-1))
        indices = torch.topk(choice.masked_fill(~keep, float("-inf")), k=top_k, dim=-1, sorted=False)[1]
        weights = scores.gather(1, indices)
        if router.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return masked_logits, weights * router.routed_scaling_factor, indices
    if kind == "ernie":
        probs = F.softmax(logits.float() + mask, dim=1, dtype=torch.float)
        choice = router.moe_statics(probs) + mask
        indices = torch.topk(choice, top_k, dim=-1)[1]
        weights = torch.gather(probs, dim=-1, index=indices)
        weights = weights / torch.clamp(weights.sum(dim=-1, keepdim=True), min=router.norm_min)
        return masked_logits, weights.to(logits.dtype), indices
    if kind == "gpt_oss":
        values, indices = torch.topk(masked_logits, top_k, dim=-1)
        return masked_logits, F.softmax(values, dim=1, dtype=values.dtype), indices
    raise ValueError(f"no masked routing for {kind!r}")


def router_hook(kind: str, masked_ids, num_experts: int):
    """A forward hook for a router module that returns the masked routing.

    The (E,) mask is built on the logits' device at the first call (a model may be
    created on the meta device and filled later, as ``from_pretrained`` does).
    """
    ids, masks = list(masked_ids), {}

    def hook(module, args, output):
        logits = output[0].reshape(-1, output[0].shape[-1])  # (N, E)
        if logits.device not in masks:
            masks[logits.device] = logit_mask(num_experts, ids, device=logits.device)
        return route(kind, module, logits, masks[logits.device])

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


def attach(model, masked: dict, model_type: str | None = None) -> list:
    """Register masking hooks on ``model`` for ``{decoder layer: [masked ids]}``; returns the handles."""
    model_type = model_type or model.config.model_type
    kind = KINDS[model_type]
    layers = model.model.layers
    handles = []
    for layer, ids in masked.items():
        if not len(ids):
            continue
        decoder_layer = layers[int(layer)]
        if kind == "monet":
            hook = monet_hook(ids, int(model.config.moe_experts))
            handles.append(decoder_layer.moe.register_forward_hook(hook))
            continue
        router = getattr(decoder_layer.mlp, ROUTER_ATTRIBUTE.get(model_type, "gate"))
        handles.append(router.register_forward_hook(router_hook(kind, ids, int(router.num_experts))))
    return handles
