"""Routing and composed-expert outputs of a MONET model, for ``moe-trace`` and friends.

A MONET layer has N = E**2 composed experts (E = ``config.moe_experts``), expert (i, j) having
the id ``i * E + j`` (:func:`composed_id`). Its output is sum_h sum_(i,j) g1_hi g2_hj E_ij(x)
(eq. 7 / 14), so the gate of a composed expert is g_ij = sum_h g1_hi g2_hj. Nothing here builds
an (..., N) tensor per token: top-M experts come from the sparse supports of g1 and g2.

Typical use (per batch)::

    from moetools.models.monet.routing import (run_with_routing, top_composed_experts,
                                               expert_output_norms)
    outputs, layers = run_with_routing(model, input_ids, attention_mask)   # eval mode, no grad
    for routing in layers:                                    # one per decoder layer
        ids, gates = top_composed_experts(routing.g1, routing.g2, top=8)   # (B, T, 8) each
        tokens = torch.arange(B * T).repeat_interleave(8)
        norms = expert_output_norms(model, routing.layer, routing.moe_input.flatten(0, 1),
                                    tokens, ids.flatten())                 # (B*T*8,)
        contribution = gates.flatten() * norms                             # g_ij * ||E_ij(x)||_2

API:

- :func:`is_monet` (model) -> bool.
- :func:`run_with_routing` (model, input_ids, attention_mask=None) -> (outputs, [MonetLayerRouting]):
  one record per decoder layer with ``layer`` (index), ``moe_input`` (B, T, D: the normed hidden
  state the experts read), ``g1``, ``g2`` (B, T, H, E float32 routing probabilities of the two
  factors, zero outside the kept experts; layers of one routing group share them).
- :func:`top_composed_experts` (g1, g2, top) -> ids (B, T, top) int64, gates (B, T, top) float32,
  sorted by gate; fewer than ``top`` non-zero pairs leave gate 0 entries (ids then meaningless).
- :func:`composed_gates` (g1, g2, ids) -> (B, T, K): g_ij for given composed ids (B, T, K).
- :func:`composed_gate_sums` (g1, g2, mask=None) -> (B, E, E): sum over a sequence's tokens of
  g_ij for every composed expert (N numbers per sequence, not per token), for DAS/skew metrics.
- :func:`expert_outputs` (model, layer, x, token_index, ids) -> (P, D): E_ij(x_t) of pairs
  (token_index[p], ids[p]) with x (tokens, D) the layer's ``moe_input`` flattened; computed in
  chunks from the layer's weights (biases included, eq. 6 / eq. 13).
- :func:`expert_output_norms` (same arguments) -> (P,): ||E_ij(x_t)||_2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MonetLayerRouting:
    """What one decoder layer's experts saw: input (B, T, D) and routing g1, g2 (B, T, H, E)."""

    layer: int
    moe_input: torch.Tensor
    g1: torch.Tensor
    g2: torch.Tensor


def is_monet(model) -> bool:
    """True for a MonetForCausalLM / MonetModel (by ``config.model_type``)."""
    return getattr(getattr(model, "config", None), "model_type", None) == "monet"


def _decoder_layers(model):
    base = getattr(model, "model", model)
    return base.layers


def composed_id(i, j, experts: int):
    """The id of composed expert (i, j): i * experts + j."""
    return i * experts + j


def split_composed_id(ids, experts: int):
    """(i, j) of composed ids."""
    return ids // experts, ids % experts


@torch.no_grad()
def run_with_routing(model, input_ids, attention_mask=None):
    """Run ``model`` (left in its mode; use eval) and capture each layer's expert input and routing."""
    captured: dict[int, MonetLayerRouting] = {}
    handles = []
    for index, layer in enumerate(_decoder_layers(model)):
        def hook(module, args, _index=index):
            x, g1, g2 = args
            captured[_index] = MonetLayerRouting(_index, x.detach(), g1.detach().float(), g2.detach().float())

        handles.append(layer.moe.register_forward_pre_hook(hook))
    try:
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, [captured[i] for i in sorted(captured)]


def _support(g: torch.Tensor, width: int):
    """The ``width`` largest entries per head: values, indices (.., H, width)."""
    return g.topk(width, dim=-1)


def top_composed_experts(g1: torch.Tensor, g2: torch.Tensor, top: int):
    """Top-``top`` composed experts per token by g_ij = sum_h g1_hi g2_hj (eq. 7).

    Exact: every pair with non-zero gate lies in some head's support K1_h x K2_h, so the
    candidates are the per-head products over the kept experts (width = the most kept by any
    head in the batch), summed over heads by id. Memory (B, T, H * K1 * K2), never (B, T, N);
    with the release's sizes (H=8, K~32) that is ~0.5 MB per token, so call it on chunks of tokens.
    """
    experts = g1.shape[-1]
    lead = g1.shape[:-2]
    width1 = max(1, int((g1 > 0).sum(-1).max()))
    width2 = max(1, int((g2 > 0).sum(-1).max()))
    v1, i1 = _support(g1.float(), width1)                               # (B, T, H, K1)
    v2, i2 = _support(g2.float(), width2)                               # (B, T, H, K2)
    values = (v1[..., :, None] * v2[..., None, :]).flatten(-3)          # (B, T, H*K1*K2)
    ids = (i1[..., :, None] * experts + i2[..., None, :]).flatten(-3)   # (B, T, H*K1*K2)
    # sum duplicates (the same pair chosen by several heads): sort ids, segment-sum
    ids, order = ids.sort(dim=-1)
    values = values.gather(-1, order)
    new_segment = torch.ones_like(ids, dtype=torch.bool)
    new_segment[..., 1:] = ids[..., 1:] != ids[..., :-1]
    segment = new_segment.long().cumsum(-1) - 1                          # (B, T, C)
    summed = torch.zeros_like(values).scatter_add_(-1, segment, values)
    segment_ids = torch.zeros_like(ids).scatter_(-1, segment, ids)
    summed = summed.masked_fill(torch.arange(summed.shape[-1], device=summed.device) > segment[..., -1:], -1.0)
    top = min(top, summed.shape[-1])
    gates, where = summed.topk(top, dim=-1)
    chosen = segment_ids.gather(-1, where)
    return chosen.reshape(*lead, top), gates.clamp_min(0.0).reshape(*lead, top)


def composed_gates(g1: torch.Tensor, g2: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """g_ij = sum_h g1_hi g2_hj for composed ids (B, T, K) -> (B, T, K)."""
    i, j = split_composed_id(ids, g1.shape[-1])
    heads = g1.shape[-2]
    picked1 = g1.float().gather(-1, i[..., None, :].expand(*i.shape[:-1], heads, i.shape[-1]))  # (B, T, H, K)
    picked2 = g2.float().gather(-1, j[..., None, :].expand(*j.shape[:-1], heads, j.shape[-1]))
    return (picked1 * picked2).sum(-2)


def composed_gate_sums(g1: torch.Tensor, g2: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per sequence, sum over tokens of g_ij for all (i, j): (B, E, E) (index [b, i, j] = id i*E+j)."""
    g1, g2 = g1.float(), g2.float()
    if mask is not None:
        g1 = g1 * mask[..., None, None].float()
    return torch.einsum("bthi,bthj->bij", g1, g2)


def _moe(model, layer: int):
    return _decoder_layers(model)[layer].moe


@torch.no_grad()
def expert_outputs(model, layer: int, x: torch.Tensor, token_index: torch.Tensor, ids: torch.Tensor,
                   chunk_size: int = 1024) -> torch.Tensor:
    """E_ij(x_t) (P, D) for pairs (token_index[p], ids[p]); ``x`` (tokens, D) is the layer's moe_input.

    HD (eq. 6): V_j s(U_i x + b1_i) + b2_j.  VD (eq. 13): the two halves of
    [V11_i a1_i + V12_i a2_j + b12_i ; V21_j a1_i + V22_j a2_j + b22_j], a1 = s(U1_i x + b11_i),
    a2 = s(U2_j x + b21_j). Only the chosen experts' weights are gathered, ``chunk_size`` pairs at a time.
    """
    moe = _moe(model, layer)
    experts = moe.experts
    pieces = []
    for start in range(0, ids.numel(), chunk_size):
        chunk_ids, chunk_tokens = ids[start:start + chunk_size], token_index[start:start + chunk_size]
        i, j = split_composed_id(chunk_ids, experts)
        xs = x[chunk_tokens]                                                        # (P, D)
        if hasattr(moe, "u"):  # horizontal
            m = moe.moe_dim
            u = moe.u.weight.view(experts, m, -1)                                   # (E, M, D)
            hidden = moe.act_fn(torch.einsum("pmd,pd->pm", u[i], xs) + moe.u.bias.view(experts, m)[i])
            v = moe.v.weight.view(-1, experts, m)                                   # (D, E, M)
            out = torch.einsum("dpm,pm->pd", v[:, j], hidden) + moe.b[j]
        else:                  # vertical
            m = moe.half_dim
            u1, u2 = moe.u1.weight.view(experts, m, -1), moe.u2.weight.view(experts, m, -1)
            a1 = moe.act_fn(torch.einsum("pmd,pd->pm", u1[i], xs) + moe.u1.bias.view(experts, m)[i])
            a2 = moe.act_fn(torch.einsum("pmd,pd->pm", u2[j], xs) + moe.u2.bias.view(experts, m)[j])

            def block(linear, index, activation, m=m):
                return torch.einsum("dpm,pm->pd", linear.weight.view(-1, experts, m)[:, index], activation)

            top_half = block(moe.v11, i, a1) + block(moe.v12, i, a2) + moe.b1[i]
            bottom_half = block(moe.v21, j, a1) + block(moe.v22, j, a2) + moe.b2[j]
            out = torch.cat((top_half, bottom_half), dim=-1)
        pieces.append(out)
    if not pieces:
        return x.new_zeros((0, x.shape[-1]))
    return torch.cat(pieces)


def expert_output_norms(model, layer: int, x, token_index, ids, chunk_size: int = 1024) -> torch.Tensor:
    """||E_ij(x_t)||_2 (P,) for pairs (token_index[p], ids[p]); see :func:`expert_outputs`."""
    return expert_outputs(model, layer, x, token_index, ids, chunk_size).float().norm(dim=-1)


__all__ = [
    "MonetLayerRouting",
    "composed_gate_sums",
    "composed_gates",
    "composed_id",
    "expert_output_norms",
    "expert_outputs",
    "is_monet",
    "run_with_routing",
    "split_composed_id",
    "top_composed_experts",
]
