"""ERNIE-4.5-MoE: softmax, top-k chosen on probabilities + ``moe_statics`` bias,
gates renormalised (clamped by ``moe_norm_min``); optional shared experts; MoE
only on layers in [moe_layer_start_index, moe_layer_end_index] every ``moe_layer_interval``."""

from __future__ import annotations

from ..registry import Adapter, RoutingRule


class Ernie45MoeAdapter(Adapter):
    """ERNIE-4.5-MoE: softmax, top-k on probabilities + moe_statics bias, renormalised."""

    name = "ernie4_5_moe"
    model_types = ("ernie4_5_moe",)
    rule = RoutingRule(scoring="softmax", order="softmax_then_topk", renormalize=True, score_bias=True)
    score_bias_attribute = "moe_statics.e_score_correction_bias"  # [1, E], added to the probabilities
    gate_dtype = "float32"
