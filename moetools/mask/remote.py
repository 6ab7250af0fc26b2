"""The custom code a ``remote``-mode masked directory carries (formats/mask.md, "remote").

Three small files, none importing moetools, so ``AutoModelForCausalLM.from_pretrained(OUT,
trust_remote_code=True)`` loads the masked model on a machine without moetools:

- ``configuration_moetools_mask.py``: the family's config class, unchanged but for its name;
- ``modeling_moetools_mask.py``: the family's ``*ForCausalLM`` plus the routing hooks of
  ``config.moe_mask`` attached at construction;
- ``moetools_mask_routing.py``: a verbatim copy of :mod:`moetools.mask.routing`.

config.json's ``model_type`` becomes ``moetools_masked_<family>``, a type transformers does not
know, so loading without ``trust_remote_code=True`` fails instead of silently giving the unmasked
model. MONET directories also carry MONET's own configuration and modeling files
(:mod:`moetools.models.monet.shipped`, the one source of those bytes).
"""

from __future__ import annotations

import shutil
from pathlib import Path

CONFIG_FILE, MODELING_FILE, ROUTING_FILE = ("configuration_moetools_mask", "modeling_moetools_mask",
                                            "moetools_mask_routing")

_CONFIG = '''"""Config of a model masked by moe-mask (moetools formats/mask.md): the {family} config, renamed."""

{config_import}


class MoetoolsMaskedConfig(BaseConfig):
    model_type = "{family}"  # the family's own type once loaded, so tools that know the family recognise it
'''

_MODELING = '''"""A {family} model masked by moe-mask (moetools formats/mask.md): the family's model with the
masked experts removed at routing level by forward hooks (moetools_mask_routing.py)."""

{model_import}

from .configuration_moetools_mask import MoetoolsMaskedConfig
from .moetools_mask_routing import attach


class MoetoolsMaskedForCausalLM(BaseForCausalLM):
    config_class = MoetoolsMaskedConfig

    def __init__(self, config):
        config.model_type = "{family}"  # as the family's own models say (config.json keeps the masked type)
        super().__init__(config)
        record = config.moe_mask  # {{"layers": {{"<layer>": {{"masked": [ids], ...}}}}, ...}}
        attach(self, {{int(k): v["masked"] for k, v in record["layers"].items()}}, model_type="{family}")
'''


def _imports(family: str) -> tuple[str, str]:
    if family == "monet":
        return ("from .configuration_monet import MonetConfig as BaseConfig",
                "from .modeling_monet import MonetForCausalLM as BaseForCausalLM")
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config_class = type(AutoConfig.for_model(family))
    package = config_class.__module__.rsplit(".", 1)[0]
    return (f"from {config_class.__module__} import {config_class.__name__} as BaseConfig",
            f"from {package}.modeling_{family} import {MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[family]} as BaseForCausalLM")


def write_code(directory: Path, family: str) -> dict:
    """Write the custom code into ``directory``; returns the config.json keys that point at it."""
    directory = Path(directory)
    config_import, model_import = _imports(family)
    (directory / f"{CONFIG_FILE}.py").write_text(_CONFIG.format(family=family, config_import=config_import))
    (directory / f"{MODELING_FILE}.py").write_text(_MODELING.format(family=family, model_import=model_import))
    here = Path(__file__).resolve().parent
    shutil.copyfile(here / "routing.py", directory / f"{ROUTING_FILE}.py")
    if family == "monet":  # MONET's own code, the bytes every MONET directory moetools writes carries
        from ..models.monet.shipped import write_shipped

        write_shipped(directory)
    return {"model_type": f"moetools_masked_{family}",
            "architectures": ["MoetoolsMaskedForCausalLM"],
            "auto_map": {"AutoConfig": f"{CONFIG_FILE}.MoetoolsMaskedConfig",
                         "AutoModelForCausalLM": f"{MODELING_FILE}.MoetoolsMaskedForCausalLM"}}


def is_own_code(directory: Path, family: str) -> bool:
    """True when the directory's custom code is byte for byte what :func:`write_code` writes today
    (so moetools may load it with ``trust_remote_code=True`` without trusting anything else)."""
    import tempfile

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as scratch:
        write_code(Path(scratch), family)
        for path in Path(scratch).iterdir():
            mine = directory / path.name
            if not mine.is_file() or mine.read_bytes() != path.read_bytes():
                return False
    return True
