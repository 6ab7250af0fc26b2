"""What knows model families: MoE layers, routers, experts, unembedding; model identity."""

from .identity import model_identity
from .registry import Adapter, MoeLayer, RoutingRule, adapter_for, register_adapter, registered_adapters

__all__ = ["Adapter", "MoeLayer", "RoutingRule", "adapter_for", "model_identity", "register_adapter",
           "registered_adapters"]
