"""The ``experts.json`` file (formats/experts.md): an expert set in ESFT's layout plus provenance.

Not a stream (no header/end record): one JSON object, so that ESFT's own training code
(``deepseek-ai/ESFT``, ``train.py --expert_config``) reads what moe-select writes and moetools
reads ESFT's released expert-config files unchanged::

    {"experts": {"<layer>": [ids]}, "shared_experts": false, "non_expert_modules": false,
     "moetools": {"version": 1, "model": {...}, "criterion": {...}, "scores": {...}, ...}}

``<layer>`` is the model's decoder-layer index (0-based, as in the trace header's ``layers``;
ESFT's DeepSeek-V2-Lite files start at "1" because layer 0 is dense). The checks live here so
that moe-select, moe-mask, moe-tune, moe-eval and ``moe-cat`` agree on one definition.
"""

from __future__ import annotations

from ...errors import FormatError
from ..schema import is_int, is_number, number_problem

#: the highest ``moetools.version`` of an experts file this reader knows
EXPERTS_VERSION = 1
MODEL_FIELDS = ("name", "model_type", "num_layers", "moe_layers", "num_experts", "top_k", "fingerprint")


def _fail(where: str, message: str):
    raise FormatError(f"{where}: {message}")


def check_layer_key(key, where: str = "experts") -> int:
    """A layer key is a str of decimal digits (ESFT's form); returns it as int."""
    if not isinstance(key, str) or not key.isdigit() or (len(key) > 1 and key[0] == "0"):
        _fail(where, f"layer key {key!r} is not a non-negative decimal integer string")
    return int(key)


def check_experts_object(data, where: str = "experts file") -> None:
    """Raise :class:`FormatError` unless ``data`` is a valid experts.json object (formats/experts.md)."""
    if not isinstance(data, dict):
        _fail(where, "not a JSON object")
    experts = data.get("experts")
    if not isinstance(experts, dict):
        _fail(where, "field 'experts' missing or not an object of layer -> list of expert ids")
    for key, ids in experts.items():
        check_layer_key(key, where)
        if not isinstance(ids, list):
            _fail(where, f"experts[{key!r}] is not a list")
        for value in ids:
            if not is_int(value) or value < 0:
                _fail(where, f"experts[{key!r}] holds {value!r}, not a non-negative integer id")
        if len(set(ids)) != len(ids):
            _fail(where, f"experts[{key!r}] lists an expert twice")
    for flag in ("shared_experts", "non_expert_modules"):
        if flag in data and not isinstance(data[flag], bool):
            _fail(where, f"field {flag!r} must be true or false")
    block = data.get("moetools")
    if block is None:
        return  # a plain ESFT file
    if not isinstance(block, dict):
        _fail(where, "field 'moetools' is not an object")
    version = block.get("version")
    if not is_int(version) or version < 1:
        _fail(where, f"moetools.version {version!r} is not a positive integer")
    if version > EXPERTS_VERSION:
        from ...errors import VersionError

        raise VersionError(f"{where}: moetools.version {version} is not supported by this reader "
                           f"(knows up to {EXPERTS_VERSION}); upgrade moetools")
    model = block.get("model")
    if model is not None:
        check_model_block(model, where)
        check_against_model(data, model, where)  # the set's own model: its layers and ids must be that model's
    for name in ("criterion", "tool"):
        if name in block and block[name] is not None and not isinstance(block[name], dict):
            _fail(where, f"moetools.{name} is not an object")
    if "sources" in block and not isinstance(block["sources"], list):
        _fail(where, "moetools.sources is not a list")
    scores = block.get("scores")
    if scores is not None:
        if not isinstance(scores, dict):
            _fail(where, "moetools.scores is not an object")
        for key, row in scores.items():
            check_layer_key(key, where)
            if not isinstance(row, dict):
                _fail(where, f"moetools.scores[{key!r}] is not an object of expert id -> number")
            for expert, value in row.items():
                if not (isinstance(expert, str) and expert.isdigit()):
                    _fail(where, f"moetools.scores[{key!r}] key {expert!r} is not an expert id")
                if value is not None and not is_number(value):
                    _fail(where, f"moetools.scores[{key!r}][{expert!r}] {number_problem(value, 'a number or null')}")


def check_model_block(model, where: str = "experts file") -> None:
    if not isinstance(model, dict):
        _fail(where, "moetools.model is not an object")
    for name in ("num_experts", "num_layers", "top_k"):
        if name in model and (not is_int(model[name]) or model[name] < 0):
            _fail(where, f"moetools.model.{name} is not a non-negative integer")
    layers = model.get("moe_layers")
    if layers is not None and not (isinstance(layers, list) and all(is_int(x) and x >= 0 for x in layers)):
        _fail(where, "moetools.model.moe_layers is not a list of layer indices")
    fp = model.get("fingerprint")
    if fp is not None and not isinstance(fp, str):
        _fail(where, "moetools.model.fingerprint is not a string")


def check_against_model(data: dict, model: dict, where: str = "experts file") -> None:
    """Layers must be MoE layers of ``model`` and ids below its ``num_experts`` (FormatError otherwise).

    The one validation of an expert set against a model header: every reader (a file's own
    ``moetools.model`` block, ``read_experts(model=...)``) and the set algebra call it."""
    moe_layers = model.get("moe_layers")
    num_experts = model.get("num_experts")
    for key, ids in data["experts"].items():
        layer = int(key)
        if moe_layers is not None and layer not in moe_layers and ids:
            _fail(where, f"layer {layer} is not an MoE layer of {model.get('name')!r} "
                         f"(MoE layers: {_span(moe_layers)})")
        if num_experts is not None:
            bad = [i for i in ids if i >= num_experts]
            if bad:
                _fail(where, f"layer {layer}: expert id {bad[0]} out of range for {model.get('name')!r} "
                             f"({num_experts} experts per layer)")


def _span(layers) -> str:
    layers = list(layers)
    if layers and layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 3:
        return f"{layers[0]}..{layers[-1]}"
    return ", ".join(str(x) for x in layers)


__all__ = ["EXPERTS_VERSION", "MODEL_FIELDS", "check_against_model", "check_experts_object",
           "check_layer_key", "check_model_block"]
