"""DeepSeek-V2 (softmax, greedy or group-limited greedy, no renormalisation, scaled)
and DeepSeek-V3 (sigmoid + score-correction bias, group-limited, renormalised, scaled).
Both have shared experts and ``first_k_dense_replace`` dense layers."""

from __future__ import annotations

from ..registry import Adapter, RoutingRule


def _group_limited_max_top_k(adapter) -> int:
    """Group-limited routers choose among the experts of the best ``topk_group`` of ``n_group`` groups."""
    experts = adapter.moe_layers()[0].num_experts
    if not adapter.routing_rule().group_limited:
        return experts
    groups = int(getattr(adapter.config, "n_group", 1) or 1)
    return int(getattr(adapter.config, "topk_group", groups) or groups) * (experts // groups)


class DeepseekV2Adapter(Adapter):
    """DeepSeek-V2: softmax, greedy or group-limited top-k, scaled; shared experts."""

    name = "deepseek_v2"
    model_types = ("deepseek_v2",)
    max_top_k = _group_limited_max_top_k

    def routing_rule(self, layer=None) -> RoutingRule:
        return RoutingRule(scoring="softmax", order="softmax_then_topk", renormalize=False,
                           group_limited=getattr(self.config, "topk_method", "greedy") == "group_limited_greedy",
                           scaling=float(getattr(self.config, "routed_scaling_factor", 1.0) or 1.0))


class DeepseekV3Adapter(Adapter):
    """DeepSeek-V3: sigmoid + score-correction bias, group-limited top-k, renormalised, scaled."""

    name = "deepseek_v3"
    model_types = ("deepseek_v3",)
    max_top_k = _group_limited_max_top_k

    def routing_rule(self, layer=None) -> RoutingRule:
        return RoutingRule(scoring="sigmoid", order="softmax_then_topk",
                           renormalize=bool(getattr(self.config, "norm_topk_prob", True)), score_bias=True,
                           group_limited=int(getattr(self.config, "n_group", 1) or 1) > 1,
                           scaling=float(getattr(self.config, "routed_scaling_factor", 1.0) or 1.0))

