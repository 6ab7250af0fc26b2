"""OLMoE, Mixtral, Qwen2-MoE, Qwen3-MoE: softmax over all experts, then top-k.

OLMoE/Qwen renormalise the selected probabilities when ``norm_topk_prob``;
Mixtral always does. Qwen2-MoE adds a sigmoid-gated shared expert.
"""

from __future__ import annotations

from ..registry import Adapter, RoutingRule, register_adapter


class _SoftmaxTopK(Adapter):
    def routing_rule(self, layer=None) -> RoutingRule:
        return RoutingRule(scoring="softmax", order="softmax_then_topk",
                           renormalize=bool(getattr(self.config, "norm_topk_prob", False)))


@register_adapter
class OlmoeAdapter(_SoftmaxTopK):
    name = "olmoe"
    model_types = ("olmoe",)


@register_adapter
class MixtralAdapter(_SoftmaxTopK):
    name = "mixtral"
    model_types = ("mixtral",)

    def routing_rule(self, layer=None) -> RoutingRule:
        return RoutingRule(scoring="softmax", order="softmax_then_topk", renormalize=True)


@register_adapter
class Qwen2MoeAdapter(_SoftmaxTopK):
    name = "qwen2_moe"
    model_types = ("qwen2_moe",)


@register_adapter
class Qwen3MoeAdapter(_SoftmaxTopK):
    name = "qwen3_moe"
    model_types = ("qwen3_moe",)
