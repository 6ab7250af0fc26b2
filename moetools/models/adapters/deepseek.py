"""DeepSeek-V2 (softmax, greedy or group-limited greedy, no renormalisation, scaled)
and DeepSeek-V3 (sigmoid + score-correction bias, group-limited, renormalised, scaled).
Both have shared experts and ``first_k_dense_replace`` dense layers."""

from __future__ import annotations

from ..registry import Adapter, RoutingRule


class _GroupLimited(Adapter):
    topk_sorted = False  # both routers take torch.topk(..., sorted=False)

    def expert_groups(self) -> tuple[int, int]:
        """(``n_group``, ``topk_group``) when the router is group-limited."""
        if not self.routing_rule().group_limited:
            return 1, 1
        groups = int(getattr(self.config, "n_group", 1) or 1)
        return groups, int(getattr(self.config, "topk_group", groups) or groups)

    def max_top_k(self) -> int:
        """Group-limited routers choose among the experts of the best ``topk_group`` of ``n_group`` groups."""
        groups, top_groups = self.expert_groups()
        return top_groups * (self.moe_layers()[0].num_experts // groups)


class DeepseekV2Adapter(_GroupLimited):
    """DeepSeek-V2: softmax, greedy or group-limited top-k, scaled; shared experts."""

    name = "deepseek_v2"
    model_types = ("deepseek_v2",)

    def routing_rule(self, layer=None) -> RoutingRule:
        return RoutingRule(scoring="softmax", order="softmax_then_topk", renormalize=False,
                           group_limited=getattr(self.config, "topk_method", "greedy") == "group_limited_greedy",
                           scaling=float(getattr(self.config, "routed_scaling_factor", 1.0) or 1.0))


class DeepseekV3Adapter(_GroupLimited):
    """DeepSeek-V3: sigmoid + score-correction bias, group-limited top-k, renormalised, scaled."""

    name = "deepseek_v3"
    model_types = ("deepseek_v3",)
    expert_count_key = "n_routed_experts"
    group_score = "top2_sum"  # a group scores the sum of its best two (bias-corrected) experts

    def routing_rule(self, layer=None) -> RoutingRule:
        return RoutingRule(scoring="sigmoid", order="softmax_then_topk",
                           renormalize=bool(getattr(self.config, "norm_topk_prob", True)), score_bias=True,
                           group_limited=int(getattr(self.config, "n_group", 1) or 1) > 1,
                           scaling=float(getattr(self.config, "routed_scaling_factor", 1.0) or 1.0))

