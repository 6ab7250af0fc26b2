"""MONET for transformers: ``MonetConfig``, ``MonetModel``, ``MonetForCausalLM`` and their Auto registration.

Importing this package registers MONET with transformers' Auto classes: the one place that
does (:func:`moetools.models.load_model` imports it). After ``import moetools.models.monet``,
``AutoConfig``/``AutoModel``/``AutoModelForCausalLM.from_pretrained(dir)`` load a MONET
checkpoint (``model_type="monet"``) without ``trust_remote_code``. It imports torch and
transformers, so only code that loads a model imports it. :func:`register` is idempotent.
"""

from __future__ import annotations

from ...lazy import lazy_exports

_LAZY = {
    "MonetConfig": "configuration_monet",
    "monet_config_problems": "configuration_monet",
    "MonetModel": "modeling_monet",
    "MonetForCausalLM": "modeling_monet",
    "MonetPreTrainedModel": "modeling_monet",
}


def register_config() -> None:
    """Register ``MonetConfig`` with ``AutoConfig`` (idempotent)."""
    from transformers.models.auto.configuration_auto import AutoConfig

    from .configuration_monet import MonetConfig

    AutoConfig.register("monet", MonetConfig, exist_ok=True)


def register_models() -> None:
    """Register ``MonetModel``/``MonetForCausalLM`` with ``AutoModel``/``AutoModelForCausalLM`` (idempotent)."""
    from transformers.models.auto.modeling_auto import AutoModel, AutoModelForCausalLM

    from .configuration_monet import MonetConfig
    from .modeling_monet import MonetForCausalLM, MonetModel

    register_config()
    AutoModel.register(MonetConfig, MonetModel, exist_ok=True)
    AutoModelForCausalLM.register(MonetConfig, MonetForCausalLM, exist_ok=True)


def register() -> None:
    """Register MONET with AutoConfig, AutoModel and AutoModelForCausalLM (imports torch)."""
    register_models()


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = ["MonetConfig", "MonetForCausalLM", "MonetModel", "MonetPreTrainedModel",
           "monet_config_problems", "register", "register_config", "register_models"]


register()
