"""What knows model families: adapters, the routing capture, one model loader, model identity.

- :mod:`.registry`: :class:`Adapter` and the ``moetools.adapters`` entry-point group
  (built-ins in :mod:`.adapters`, declared in pyproject.toml like any plugin's);
- :mod:`.capture` / :mod:`.traced_experts`: routing, gates and g·‖E‖ recorded inside
  transformers' experts computation;
- :mod:`.loader`: :func:`load_model`, the one loader every tool uses;
- :mod:`.monet`: the MONET model, registered with transformers' Auto classes on import.

Names are imported lazily, so importing this package (or any tool that never touches a
model) does not pay for importing torch.
"""

from ..lazy import lazy_exports

_LAZY = {
    "Adapter": "registry", "MoeLayer": "registry", "RoutingRule": "registry", "adapter_for": "registry",
    "register_adapter": "registry", "registered_adapters": "registry", "adapter_table": "registry",
    "model_identity": "identity", "load_model": "loader", "load_tokenizer": "loader", "load_config": "loader",
    "LoadedModel": "loader", "torch_dtype": "loader", "check_device": "loader", "RoutingCapture": "capture",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = ["Adapter", "LoadedModel", "MoeLayer", "RoutingCapture", "RoutingRule", "adapter_for", "adapter_table",
           "check_device", "load_config", "load_model", "load_tokenizer", "model_identity", "register_adapter",
           "registered_adapters", "torch_dtype"]
