"""Direct logit attribution (DLA) of every expert of every MoE layer onto target tokens.

Paper 002 ("trigger/target" experiments) asks whether a label predicts what an expert
*does*: on trigger text, does the labelled expert push up the target tokens more than
the other experts of its layer? We measure that push by direct logit attribution
through the final norm's linearisation (the residual stream's rms frozen):

    DLA_i = Σ_{p ∈ P} Σ_{t ∈ T}  g_i(x_p) · W_U[t] · (γ ⊙ E_i(x_p)) / rms(h_p)

- P: every (unpadded) token position of the trigger texts; T: the target token ids;
- x_p: the input of the layer's experts module at p (after the pre-MoE norm);
- E_i(x_p) (d,): expert i's output computed from its own weights (gate_up_proj [E, 2I, d],
  down_proj [E, d, I], the family's gate ``_apply_gate``), for EVERY expert, routed or not;
- g_i(x_p): the full router probability of expert i, softmax over all E logits
  (``Adapter.router_probabilities``). For OLMoE (``norm_topk_prob`` false) it is exactly the
  gate a routed expert gets; Mixtral/Qwen renormalise the routed gates by 1/Σ_topk p, a
  per-position factor shared by all experts: we keep p_i so that routed and unrouted
  experts are scored on the same scale;
- γ: the final RMSNorm's weight, h_p: the residual stream entering the final norm at p,
  rms(h_p) = sqrt(mean_j h_pj² + ε) (frozen: the linearisation of y = γ ⊙ h / rms(h));
- W_U[t]: the unembedding row of token t (lm_head has no bias in these families).

Supported: routers whose rule (the adapter's :class:`moetools.models.RoutingRule`) is a softmax
over all experts then the top-k, without a score bias or a group limit, so that a routed expert's
gate is p_i times a factor every expert of the position shares (renormalisation, scaling), with
transformers' fused experts (OLMoE, Mixtral, Qwen2-MoE, Qwen3-MoE, greedy DeepSeek-V2, and any
plugin family of that rule); others raise :class:`UsageError` (exit 2). A shared expert
(Qwen2-MoE, DeepSeek-V2) is not one of the ranked experts.
"""

from __future__ import annotations

import torch
from transformers.integrations import moe as hf_moe

from ..errors import UsageError


def check_supported(model, adapter) -> None:
    """UsageError (exit 2) for a model whose experts this DLA cannot run one by one."""
    if adapter is None:
        raise UsageError("moe-probe causal needs an MoE model (this one has no MoE layers)")
    rule = adapter.routing_rule()
    experts = adapter.moe_layers()[0].experts
    if rule.scoring != "softmax" or rule.order != "softmax_then_topk" or rule.score_bias or rule.group_limited \
            or not getattr(experts, "has_gate", False):
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        raise UsageError(f"moe-probe causal supports routers that softmax over all experts then take the top-k "
                         f"(no score bias, no group limit) with transformers' fused experts, not {model_type!r} "
                         f"({adapter.summary() or adapter.name})")


def all_expert_outputs(experts, x: torch.Tensor) -> torch.Tensor:
    """E_i(x) for every expert i: x (N, d) -> (N, E, d), with the library's own linear/gate code."""
    num_experts = experts.num_experts
    n = x.shape[0]
    expert_ids = torch.arange(num_experts, device=x.device).repeat(n)  # (N·E,)
    selected = x.repeat_interleave(num_experts, dim=0)  # (N·E, d), token-major
    bias = experts.gate_up_proj_bias[expert_ids] if experts.has_bias else None
    hidden = hf_moe._batched_linear(selected, experts.gate_up_proj[expert_ids], bias=bias,
                                    is_transposed=experts.is_transposed)  # (N·E, 2I)
    hidden = experts._apply_gate(hidden)  # (N·E, I)
    bias = experts.down_proj_bias[expert_ids] if experts.has_bias else None
    out = hf_moe._batched_linear(hidden, experts.down_proj[expert_ids], bias=bias,
                                 is_transposed=experts.is_transposed)  # (N·E, d)
    if experts.has_post_expert_norm:
        out = experts.post_expert_norm(out)
    return out.view(n, num_experts, -1)


def _norm_eps(norm) -> float:
    for name in ("variance_epsilon", "eps"):
        if hasattr(norm, name):
            return float(getattr(norm, name))
    return 1e-6


def dla_from_parts(probs: torch.Tensor, outputs: torch.Tensor, h_final: torch.Tensor, gamma: torch.Tensor,
                   unembed: torch.Tensor, targets: list[int], eps: float) -> torch.Tensor:
    """The formula above: probs (N, E), outputs (N, E, d), h_final (N, d), gamma (d,), unembed (V, d) -> (E,)."""
    rms = (h_final.float().pow(2).mean(dim=-1, keepdim=True) + eps).sqrt()  # (N, 1)
    direction = unembed[targets].float().sum(dim=0) * gamma.float()  # (d,): Σ_t W_U[t] ⊙ γ
    per_position = outputs.float() @ direction  # (N, E)
    return (probs.float() * per_position / rms).sum(dim=0)  # (E,)


class _Capture:
    """Forward hooks: per MoE layer the experts' input x and the router probabilities; the final norm's input."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.layers = adapter.moe_layers()
        self.x: dict[int, torch.Tensor] = {}
        self.probs: dict[int, torch.Tensor] = {}
        self.h_final: torch.Tensor | None = None
        self.handles = []

    def __enter__(self):
        for layer in self.layers:
            def take_x(module, args, index=layer.index):
                self.x[index] = args[0].detach()

            def take_probs(module, args, output, layer=layer):
                logits = self.adapter.router_logits(output)
                self.probs[layer.index] = self.adapter.router_probabilities(layer, logits.detach())

            self.handles.append(layer.experts.register_forward_pre_hook(take_x))
            self.handles.append(layer.router.register_forward_hook(take_probs))

        def take_final(module, args):
            self.h_final = args[0].detach()

        self.handles.append(self.adapter.final_norm().register_forward_pre_hook(take_final))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def layer_dla(model, tokenizer, adapter, triggers: list[str], targets: list[int],
              max_length: int = 128, only: set[int] | None = None) -> dict[int, list[float]]:
    """{layer index: [DLA_i for i in 0..E-1]} summed over the triggers' positions (one forward per trigger).

    ``only``: the MoE layer indices to attribute (default all): the others' experts are not run."""
    norm = adapter.final_norm()
    gamma = norm.weight.detach()  # (d,)
    unembed = adapter.unembedding().weight.detach()  # (V, d)
    device = unembed.device
    totals: dict[int, torch.Tensor] = {}
    for text in triggers:
        ids = tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_length,
                        return_tensors="pt")["input_ids"].to(device)  # (1, T)
        if ids.shape[1] == 0:
            continue
        with _Capture(adapter) as capture:
            model(input_ids=ids)
        h_final = capture.h_final.reshape(-1, capture.h_final.shape[-1])  # (T, d)
        for layer in capture.layers:
            if only is not None and layer.index not in only:
                continue
            x = capture.x[layer.index].reshape(-1, h_final.shape[-1])  # (T, d)
            outputs = all_expert_outputs(layer.experts, x)  # (T, E, d)
            probs = capture.probs[layer.index].reshape(-1, layer.num_experts)  # (T, E)
            scores = dla_from_parts(probs, outputs, h_final, gamma, unembed, targets, _norm_eps(norm))
            totals[layer.index] = totals.get(layer.index, 0) + scores.cpu()
    return {index: [float(v) for v in scores] for index, scores in totals.items()}


def rank_of(scores: list[float], expert: int) -> int:
    """1-based rank of ``expert`` by DLA, highest first (ties counted in its favour)."""
    return 1 + sum(1 for value in scores if value > scores[expert])
