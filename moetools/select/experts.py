"""Expert sets: read, check, combine and write ``experts.json`` (formats/experts.md).

The file is ESFT's expert config (``{"experts": {"<layer>": [ids]}, "shared_experts": false,
"non_expert_modules": false}``) plus an optional ``moetools`` block (model identity, criterion,
per-expert scores). Consumers (moe-mask, moe-tune, moe-eval) call::

    from moetools.select import read_experts
    chosen = read_experts("medical.json", model=identity)   # identity: moetools.models.model_identity(...)
    for layer, ids in chosen.items(): ...                    # int -> sorted tuple of ints

``model=`` refuses a set scored on another model (ModelMismatchError, exit 2, both fingerprints
named) and any layer / id the model does not have (FormatError, exit 2).

One validation of layers and ids (:func:`moetools.streams.schemas.experts.check_against_model`)
serves every reader and the set algebra: a file with a ``moetools.model`` block is checked
against that block on reading (the schema); :func:`union`, :func:`intersect`, :func:`minus` check
every operand against the common model and :func:`complement` against the expert count and
layers it completes to, so an id or layer out of range is refused (exit 2, naming the set, the
layer and the id), never written out or dropped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..errors import EmptyInputError, FormatError, ModelMismatchError, UsageError
from ..streams import strict_json
from ..streams.schemas.experts import EXPERTS_VERSION, check_against_model, check_experts_object


@dataclass
class ExpertSet:
    """Selected experts per layer. ``experts`` keeps each layer's ids in file order (ESFT lists
    them best first); :meth:`ids` / :meth:`items` give sorted tuples for set use."""

    experts: dict[int, list[int]] = field(default_factory=dict)
    shared_experts: bool = False
    non_expert_modules: bool = False
    model: dict | None = None            # the identity of the model it was selected on (header ``model``)
    provenance: dict = field(default_factory=dict)  # rest of the ``moetools`` block (criterion, scores, ...)
    extra: dict = field(default_factory=dict)       # unknown top-level fields, written back unchanged
    source: str = field(default="expert set", compare=False)  # where it was read from, for messages

    # -- views ---------------------------------------------------------------------------------
    def ids(self, layer: int) -> tuple[int, ...]:
        return tuple(sorted(self.experts.get(layer, ())))

    def items(self):
        """(layer, sorted ids) for every layer with at least one expert, layers ascending."""
        return [(layer, self.ids(layer)) for layer in sorted(self.experts) if self.experts[layer]]

    def layers(self) -> list[int]:
        return [layer for layer, _ in self.items()]

    def pairs(self) -> set[tuple[int, int]]:
        return {(layer, i) for layer, ids in self.experts.items() for i in ids}

    def __len__(self) -> int:
        return sum(len(ids) for ids in self.experts.values())

    def __contains__(self, pair) -> bool:
        layer, expert = pair
        return expert in self.experts.get(layer, ())

    @property
    def fingerprint(self) -> str | None:
        return (self.model or {}).get("fingerprint")

    @property
    def num_experts(self) -> int | None:
        return (self.model or {}).get("num_experts")

    # -- checks --------------------------------------------------------------------------------
    def check_model(self, model: dict, where: str = "experts file") -> None:
        """Refuse a set made for another model, or naming layers/ids ``model`` lacks (exit 2)."""
        mine, theirs = self.fingerprint, model.get("fingerprint")
        if mine is not None and theirs is not None and mine != theirs:
            raise ModelMismatchError(
                f"{where}: selected on model {(self.model or {}).get('name')!r} ({mine}), "
                f"refusing to apply it to {model.get('name')!r} ({theirs})")
        check_against_model(self.to_json(), model, where)

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_json(self) -> dict:
        data = {"experts": {str(layer): [int(i) for i in self.experts[layer]] for layer in sorted(self.experts)},
                "shared_experts": bool(self.shared_experts),
                "non_expert_modules": bool(self.non_expert_modules)}
        data.update(self.extra)
        if self.model is not None or self.provenance:
            data["moetools"] = {"version": EXPERTS_VERSION, "model": self.model, **self.provenance}
        return data

    @classmethod
    def from_json(cls, data: dict, where: str = "experts file") -> ExpertSet:
        check_experts_object(data, where)
        block = dict(data.get("moetools") or {})
        block.pop("version", None)
        model = block.pop("model", None)
        extra = {k: v for k, v in data.items()
                 if k not in ("experts", "shared_experts", "non_expert_modules", "moetools")}
        return cls(experts={int(k): list(v) for k, v in data["experts"].items()},
                   shared_experts=bool(data.get("shared_experts", False)),
                   non_expert_modules=bool(data.get("non_expert_modules", False)),
                   model=model, provenance=block, extra=extra, source=where)


def read_experts(path, model: dict | None = None) -> ExpertSet:
    """Read and validate an experts.json (``-`` = stdin); with ``model`` (an identity dict as in
    every stream header) also check it belongs to that model. FormatError/ModelMismatchError: exit 2."""
    from ..streams.files import open_text_input

    name = "-" if path in (None, "-") else os.fspath(path)
    where = "experts file" if name == "-" else name
    try:
        with open_text_input(name) as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise FormatError(f"{where}: not UTF-8 text ({exc.reason})") from None
    if not text.strip():  # /dev/null, an empty file: empty input, as for every stream (exit 3)
        raise EmptyInputError(f"{where}: empty input: no experts.json object")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{where}: not JSON ({exc.msg} at line {exc.lineno})") from None
    chosen = ExpertSet.from_json(data, where)
    if model is not None:
        chosen.check_model(model, where)
    return chosen


def dumps_experts(data: dict) -> str:
    """One top-level field per line (the layer lists stay on one line, as in ESFT's files)."""
    lines = [f" {strict_json.dumps(key)}: {strict_json.dumps(value, ensure_ascii=False)}" for key, value in data.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write_experts(path, chosen: ExpertSet) -> None:
    """Write ``chosen`` as experts.json, atomically (``-`` = stdout). One field per line."""
    from ..streams.files import create_output

    text = dumps_experts(chosen.to_json())
    with create_output(None if path in (None, "-") else path, binary_ok_on_tty=True) as out:
        out.write(text.encode("utf-8"))


# -- set algebra ---------------------------------------------------------------------------------

def _agree(sets: list[ExpertSet]) -> dict | None:
    """The common model of ``sets``; refuse sets of different models (exit 2)."""
    model = None
    for chosen in sets:
        if chosen.model is None:
            continue
        if model is None:
            model = chosen.model
        elif chosen.fingerprint != model.get("fingerprint"):
            raise ModelMismatchError(f"refusing to combine expert sets of different models: "
                                     f"{model.get('name')!r} ({model.get('fingerprint')}) and "
                                     f"{chosen.model.get('name')!r} ({chosen.fingerprint})")
    return model


def _combine(sets, op: str) -> ExpertSet:
    sets = list(sets)
    if not sets:
        raise UsageError(f"{op} needs at least one expert set")
    model = _agree(sets)
    if model is not None:  # an operand without a model block (an ESFT file) must fit the others' model
        for chosen in sets:
            check_against_model(chosen.to_json(), model, chosen.source)
    pairs = sets[0].pairs()
    for other in sets[1:]:
        if op == "union":
            pairs |= other.pairs()
        elif op == "intersect":
            pairs &= other.pairs()
        else:
            pairs -= other.pairs()
    layers = {layer for chosen in sets for layer in chosen.experts}
    experts = {layer: sorted(i for (l2, i) in pairs if l2 == layer) for layer in sorted(layers)}
    return ExpertSet(experts=experts,
                     shared_experts=all(s.shared_experts for s in sets) if op != "union"
                     else any(s.shared_experts for s in sets),
                     non_expert_modules=all(s.non_expert_modules for s in sets) if op != "union"
                     else any(s.non_expert_modules for s in sets),
                     model=model, provenance={"criterion": {"op": op, "operands": len(sets)}})


def union(*sets: ExpertSet) -> ExpertSet:
    return _combine(sets, "union")


def intersect(*sets: ExpertSet) -> ExpertSet:
    return _combine(sets, "intersect")


def minus(first: ExpertSet, *others: ExpertSet) -> ExpertSet:
    """Experts of ``first`` in none of ``others``."""
    return _combine([first, *others], "minus")


def complement(chosen: ExpertSet, num_experts: int | None = None, layers=None) -> ExpertSet:
    """Every expert of the model's MoE layers not in ``chosen``. The expert count and layers come
    from the set's model block unless given (an ESFT file has none: pass them)."""
    model = chosen.model or {}
    num_experts = num_experts if num_experts is not None else model.get("num_experts")
    layers = list(layers) if layers is not None else model.get("moe_layers")
    if num_experts is None or layers is None:
        raise UsageError("complement needs the model's expert count and MoE layers: the set has no "
                         "moetools.model block (an ESFT file?); give --num-experts and --layers")
    # an id or layer outside what the complement spans would silently vanish from it: refuse
    check_against_model(chosen.to_json(), {**model, "num_experts": num_experts, "moe_layers": layers,
                                           "name": model.get("name") or f"{num_experts} experts per layer"},
                        chosen.source)
    experts = {layer: [i for i in range(num_experts) if i not in set(chosen.experts.get(layer, ()))]
               for layer in layers}
    return ExpertSet(experts=experts, shared_experts=False, non_expert_modules=False, model=chosen.model,
                     provenance={"criterion": {"op": "complement", "num_experts": num_experts}})


__all__ = ["ExpertSet", "complement", "dumps_experts", "intersect", "minus", "read_experts", "union", "write_experts"]
