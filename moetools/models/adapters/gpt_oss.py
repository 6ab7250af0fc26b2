"""GPT-OSS: router with bias, top-k on logits, softmax over the selected k;
experts stored transposed (gate_up_proj [E, d, 2I] interleaved, down_proj [E, I, d]) with biases."""

from __future__ import annotations

from ..registry import Adapter, RoutingRule


class GptOssAdapter(Adapter):
    """GPT-OSS: router with bias, top-k on logits, softmax over the selected k."""

    name = "gpt_oss"
    model_types = ("gpt_oss",)
    router_attribute = "router"
    rule = RoutingRule(scoring="softmax", order="topk_then_softmax", renormalize=False, router_bias=True)
