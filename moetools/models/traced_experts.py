"""Per-expert output norms captured inside transformers' fused experts computation.

Transformers 5 dispatches every ``@use_experts_implementation`` experts module
through ``ALL_EXPERTS_FUNCTIONS[config._experts_implementation]``. We register
two implementations, ``moetools_trace_grouped_mm`` and ``moetools_trace_batched_mm``:
op-for-op the library's ``grouped_mm`` / ``batched_mm`` forwards (same kernels,
same order, same dtypes, so the layer output is bit-identical), plus what the
trace needs from inside the computation:

- ``ids`` (N, K) and ``gates`` (N, K): exactly the routing the block handed to
  its experts;
- ``norms`` (N, K): ‖E_i(x)‖₂ of each selected expert's output before the gate
  weight is applied (paper 002: the residual-stream contribution is g_i(x)·‖E_i(x)‖₂);
- optionally ``lens`` (N, K, J): logit-lens top-J token ids of each expert output.

No expert is run twice. A module records only while it has a ``_moetools_sink``
(a list the tracer owns); without one the functions just compute the output.
"""

from __future__ import annotations

import torch
from transformers.integrations import moe as hf_moe

TRACE_IMPLEMENTATIONS = {
    "grouped_mm": "moetools_trace_grouped_mm",
    "batched_mm": "moetools_trace_batched_mm",
}


def _refuse_expert_parallel(module) -> None:
    if module._is_expert_parallel:
        # expert-parallel dispatch sends sentinel ids for experts on other ranks: the norms
        # of this rank's slice would not be the whole story, so refuse rather than record less
        from ..errors import ModelError

        raise ModelError("moe-trace does not support expert parallelism; load the model with device_map instead")


def _record(module, expert_ids, gates, expert_out, order=None) -> None:
    """Append this call's routing and output norms to the module's sink.

    ``expert_out`` (S, d) holds E_i(x) for the S = N·K (token, slot) pairs, in
    ``order`` (None: token-major, slot-minor; else a permutation to undo).
    """
    sink = getattr(module, "_moetools_sink", None)
    if sink is None:
        return
    with torch.no_grad():
        norms = expert_out.float().norm(dim=-1)  # (S,) fp32 norms whatever the compute dtype
        if order is not None:
            norms = norms[order]
        entry = {"ids": expert_ids, "gates": gates, "norms": norms.view(expert_ids.shape)}
        lens = getattr(module, "_moetools_lens", None)
        if lens is not None:
            top = lens(expert_out)  # (S, J)
            if order is not None:
                top = top[order]
            entry["lens"] = top.view(*expert_ids.shape, -1)
        sink.append(entry)


def grouped_mm_forward(self, hidden_states, top_k_index, top_k_weights, observe):
    """``transformers.integrations.moe.grouped_mm_experts_forward``, op for op (same kernels, same order, so the
    layer's output is unchanged), calling ``observe(hidden, expert_out, inv_perm)`` on what it computed:
    ``hidden`` (S, I) the experts' hidden vectors h = act(W_gate x) ⊙ (W_up x) and ``expert_out`` (S, d) their
    outputs E_i(x), both grouped by expert; ``inv_perm`` (S,) restores token-major, slot-minor order.
    Used by moe-trace (norms, logit lens) and moe-probe (h). No expert parallelism.
    """
    device = hidden_states.device
    num_top_k = top_k_index.size(-1)
    num_tokens = hidden_states.size(0)
    hidden_dim = hidden_states.size(-1)
    sample_weights = top_k_weights.reshape(-1)  # (S,) S = N·K
    expert_ids = top_k_index.reshape(-1)  # (S,)
    expert_ids_g, perm = torch.sort(expert_ids)
    selected_hidden_states_g = hidden_states[perm // num_top_k]  # (S, d), grouped by expert
    sample_weights_g = sample_weights[perm]
    histc_input = expert_ids_g.float() if device.type in ("cpu", "mps") else expert_ids_g.int()
    tokens_per_expert = torch.histc(histc_input, bins=self.num_experts, min=0, max=self.num_experts - 1)
    offsets = torch.cumsum(tokens_per_expert, dim=0, dtype=torch.int32)
    if self.has_gate:
        weights, biases = self.gate_up_proj, (self.gate_up_proj_bias[expert_ids_g] if self.has_bias else None)
    else:
        weights, biases = self.up_proj, (self.up_proj_bias[expert_ids_g] if self.has_bias else None)
    proj_out = hf_moe._grouped_linear(selected_hidden_states_g, weights, offsets, bias=biases,
                                      is_transposed=self.is_transposed)  # (S, 2I) or (S, I)
    hidden = self._apply_gate(proj_out) if self.has_gate else self.act_fn(proj_out)  # (S, I)
    biases = self.down_proj_bias[expert_ids_g] if self.has_bias else None
    proj_out = hf_moe._grouped_linear(hidden, self.down_proj, offsets, bias=biases,
                                      is_transposed=self.is_transposed)  # (S, d), sorted by expert
    if self.has_post_expert_norm:
        proj_out = self.post_expert_norm(proj_out)
    weighted_out = proj_out * sample_weights_g.unsqueeze(-1)  # (S, d)
    inv_perm = torch.empty_like(perm)
    inv_perm[perm] = torch.arange(perm.size(0), device=device)
    observe(hidden, proj_out, inv_perm)
    weighted_out = weighted_out[inv_perm]
    final_hidden_states = weighted_out.view(num_tokens, num_top_k, hidden_dim).sum(dim=1)
    return final_hidden_states.to(hidden_states.dtype)


def traced_grouped_mm_forward(self, hidden_states, top_k_index, top_k_weights):
    """``transformers.integrations.moe.grouped_mm_experts_forward`` + :func:`_record` (no expert parallelism)."""
    _refuse_expert_parallel(self)

    def record(hidden, expert_out, inv_perm):
        _record(self, top_k_index, top_k_weights, expert_out, order=inv_perm)

    return grouped_mm_forward(self, hidden_states, top_k_index, top_k_weights, record)


def traced_batched_mm_forward(self, hidden_states, top_k_index, top_k_weights):
    """``transformers.integrations.moe.batched_mm_experts_forward`` + :func:`_record` (no expert parallelism)."""
    _refuse_expert_parallel(self)
    num_top_k = top_k_index.size(-1)
    num_tokens = hidden_states.size(0)
    hidden_dim = hidden_states.size(-1)
    selected_hidden_states = hidden_states.repeat_interleave(num_top_k, dim=0)  # (S, d)
    sample_weights = top_k_weights.reshape(-1)
    expert_ids = top_k_index.reshape(-1)
    if self.has_gate:
        weights = self.gate_up_proj[expert_ids]
        biases = self.gate_up_proj_bias[expert_ids] if self.has_bias else None
    else:
        weights = self.up_proj[expert_ids]
        biases = self.up_proj_bias[expert_ids] if self.has_bias else None
    proj_out = hf_moe._batched_linear(selected_hidden_states, weights, bias=biases, is_transposed=self.is_transposed)
    proj_out = self._apply_gate(proj_out) if self.has_gate else self.act_fn(proj_out)
    weights = self.down_proj[expert_ids]
    biases = self.down_proj_bias[expert_ids] if self.has_bias else None
    proj_out = hf_moe._batched_linear(proj_out, weights, bias=biases, is_transposed=self.is_transposed)  # (S, d)
    if self.has_post_expert_norm:
        proj_out = self.post_expert_norm(proj_out)
    _record(self, top_k_index, top_k_weights, proj_out)
    weighted_out = proj_out * sample_weights.unsqueeze(-1)
    final_hidden_states = weighted_out.view(num_tokens, num_top_k, hidden_dim).sum(dim=1)
    return final_hidden_states.to(hidden_states.dtype)


def register_trace_implementations() -> None:
    """Make the traced forwards known to transformers (idempotent)."""
    hf_moe.ExpertsInterface.register(TRACE_IMPLEMENTATIONS["grouped_mm"], traced_grouped_mm_forward)
    hf_moe.ExpertsInterface.register(TRACE_IMPLEMENTATIONS["batched_mm"], traced_batched_mm_forward)
