"""The custom code a ``remote``-mode masked directory carries (formats/mask.md, "remote").

Three small files, none importing moetools, so ``AutoModelForCausalLM.from_pretrained(OUT,
trust_remote_code=True)`` loads the masked model on a machine without moetools (a plugin family's
model: where its package is installed):

- ``configuration_moetools_mask.py``: the family's config class, unchanged but for its name;
- ``modeling_moetools_mask.py``: the family's ``*ForCausalLM`` plus the routing hooks of
  ``config.moe_mask`` attached at construction;
- ``moetools_mask_routing.py``: a verbatim copy of :mod:`moetools.mask.routing`.

config.json's ``model_type`` becomes ``moetools_masked_<family>``, a type transformers does not
know, so loading without ``trust_remote_code=True`` fails instead of silently giving the unmasked
model. The family's classes are imported from where they are defined (transformers, or the
plugin package that registered the family); classes defined inside moetools (MONET) travel as
copies of their module files.
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
        record = config.moe_mask  # {{"routing": {{...}}, "num_experts": E, "layers": {{"<layer>": {{"masked": [ids]}}}}}}
        attach(self, {{int(k): v["masked"] for k, v in record["layers"].items()}}, record["routing"],
               record["num_experts"])
'''


def _family_classes(family: str) -> tuple[type, type]:
    """The family's config class and ``*ForCausalLM`` class, as registered with transformers' Auto classes."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from ..errors import ModelError
    from ..models.loader import register_families

    register_families()
    try:
        config_class = type(AutoConfig.for_model(family))
        return config_class, MODEL_FOR_CAUSAL_LM_MAPPING[config_class]
    except (KeyError, ValueError):
        raise ModelError(f"model type {family!r} has no causal-LM class registered with transformers") from None


def _import_line(cls: type, alias: str, shipped: list[Path]) -> str:
    """``from <module> import <cls> as <alias>``; a moetools module is shipped and imported relatively."""
    import sys

    module = cls.__module__
    if module.split(".")[0] != "moetools":
        return f"from {module} import {cls.__name__} as {alias}"
    shipped.append(Path(sys.modules[module].__file__))
    return f"from .{module.rsplit('.', 1)[-1]} import {cls.__name__} as {alias}"


def write_code(directory: Path, family: str) -> dict:
    """Write the custom code into ``directory``; returns the config.json keys that point at it."""
    directory = Path(directory)
    config_class, model_class = _family_classes(family)
    shipped: list[Path] = []
    config_import = _import_line(config_class, "BaseConfig", shipped)
    model_import = _import_line(model_class, "BaseForCausalLM", shipped)
    (directory / f"{CONFIG_FILE}.py").write_text(_CONFIG.format(family=family, config_import=config_import))
    (directory / f"{MODELING_FILE}.py").write_text(_MODELING.format(family=family, model_import=model_import))
    shutil.copyfile(Path(__file__).resolve().parent / "routing.py", directory / f"{ROUTING_FILE}.py")
    for path in shipped:
        shutil.copyfile(path, directory / path.name)
    return {"model_type": f"moetools_masked_{family}",
            "architectures": ["MoetoolsMaskedForCausalLM"],
            "auto_map": {"AutoConfig": f"{CONFIG_FILE}.MoetoolsMaskedConfig",
                         "AutoModelForCausalLM": f"{MODELING_FILE}.MoetoolsMaskedForCausalLM"}}


def check_own_code(directory: Path, family: str) -> None:
    """Refuse (ModelError, exit 2) a directory whose code is not exactly moe-mask's own, before any of it runs.

    Loading with ``trust_remote_code=True`` runs whatever ``auto_map`` names: in config.json (the model,
    its config, a tokenizer), in tokenizer_config.json or in any other JSON file of the directory. So:
    config.json's ``auto_map`` must be exactly the one :func:`write_code` returns, no other JSON file
    may have one, and the Python files (at any depth) must be exactly :func:`write_code`'s, byte for byte.
    """
    import json
    import tempfile

    from ..errors import ModelError

    directory = Path(directory)

    def refuse(why: str):
        raise ModelError(f"{directory}: {why}; refusing to load it with trust_remote_code (its code is not "
                         "moe-mask's own: load it yourself if you trust it)")

    with tempfile.TemporaryDirectory() as scratch:
        expected_map = write_code(Path(scratch), family)["auto_map"]
        expected = {path.name: path.read_bytes() for path in Path(scratch).iterdir()}
    for path in sorted(directory.rglob("*.json")):
        if path.name.endswith(".index.json") or not path.is_file():
            continue
        try:
            value = json.loads(path.read_bytes())
        except (OSError, ValueError):
            if path.name == "config.json":
                refuse("config.json does not read as JSON")
            continue
        auto_map = value.get("auto_map") if isinstance(value, dict) else None
        if path == directory / "config.json":
            if auto_map != expected_map:
                refuse(f"config.json's auto_map is {auto_map!r}, not moe-mask's {expected_map!r}")
        elif auto_map is not None:
            refuse(f"{path.relative_to(directory)} has an auto_map")
    found = {path.relative_to(directory).as_posix(): path for path in directory.rglob("*.py")}
    for name in sorted(found):
        if name not in expected:
            refuse(f"{name} is not one of moe-mask's files")
        if found[name].read_bytes() != expected[name]:
            refuse(f"{name} differs from the file moe-mask writes")
    for name in sorted(set(expected) - set(found)):
        refuse(f"{name} is missing")


def is_own_code(directory: Path, family: str) -> bool:
    """True when :func:`check_own_code` accepts the directory."""
    from ..errors import ModelError

    try:
        check_own_code(directory, family)
    except ModelError:
        return False
    return True
