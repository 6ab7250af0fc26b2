"""OLMoE, Mixtral, Qwen2-MoE, Qwen3-MoE: softmax over all experts, then top-k.

OLMoE/Qwen renormalise the selected probabilities when ``norm_topk_prob``;
Mixtral always does. Qwen2-MoE adds a sigmoid-gated shared expert.
"""

from __future__ import annotations

from ..registry import Adapter, RoutingRule


class _SoftmaxTopK(Adapter):
    def routing_rule(self, layer=None) -> RoutingRule:
        return RoutingRule(scoring="softmax", order="softmax_then_topk",
                           renormalize=bool(getattr(self.config, "norm_topk_prob", False)))


class OlmoeAdapter(_SoftmaxTopK):
    """OLMoE: softmax over all experts, top-k, renormalised when norm_topk_prob."""

    name = "olmoe"
    model_types = ("olmoe",)


class MixtralAdapter(_SoftmaxTopK):
    """Mixtral: softmax over all experts, top-k, always renormalised."""

    name = "mixtral"
    model_types = ("mixtral",)
    gate_dtype = "float32"  # the router returns its float32 probabilities

    def routing_rule(self, layer=None) -> RoutingRule:
        return RoutingRule(scoring="softmax", order="softmax_then_topk", renormalize=True)


class Qwen2MoeAdapter(_SoftmaxTopK):
    """Qwen2-MoE: softmax top-k plus a sigmoid-gated shared expert."""

    name = "qwen2_moe"
    model_types = ("qwen2_moe",)


class Qwen3MoeAdapter(_SoftmaxTopK):
    """Qwen3-MoE: softmax over all experts, top-k, renormalised when norm_topk_prob."""

    name = "qwen3_moe"
    model_types = ("qwen3_moe",)
