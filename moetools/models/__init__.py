"""What knows model families: MoE layers, routers, experts, unembedding; model identity.

Names are imported lazily, so ``import moetools.models.monet`` (or any tool that never
touches a model) does not pay for importing torch here.
"""

_LAZY = {
    "Adapter": "registry", "MoeLayer": "registry", "RoutingRule": "registry", "adapter_for": "registry",
    "register_adapter": "registry", "registered_adapters": "registry", "model_identity": "identity",
    "load_model": "loader", "LoadedModel": "loader", "torch_dtype": "loader",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Adapter", "LoadedModel", "load_model", "torch_dtype", "MoeLayer", "RoutingRule", "adapter_for", "model_identity", "register_adapter",
           "registered_adapters"]
