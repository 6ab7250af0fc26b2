"""Prune or bias a checkpoint tensor by tensor through safetensors (``pruned`` and ``bias`` modes).

No model is loaded: each output shard (at most ``shard_bytes``) is built from tensors read one at a
time from the source files, written, and released before the next, and each source file is opened
afresh per output shard so its mapped pages do not accumulate. Peak memory is about two shards (the
tensors and safetensors' serialised copy) plus the runtime, whatever the model's size.

Tensors are recognised by their on-disk names, in the two layouts transformers 5 writes: per-expert
(``layers.L.mlp.experts.E.gate_proj.weight``, Mixtral's ``block_sparse_moe.experts.E.w1.weight``:
dropped when masked, renumbered otherwise) and fused (``layers.L.mlp.experts.gate_up_proj`` [E, ...]:
``index_select`` on dim 0). Router tensors of a masked layer (``gate.weight`` [E, d], ``router.bias``
[E], ``e_score_correction_bias`` [E] or ERNIE's [1, E]) lose the masked rows (``pruned``) or get −∞ on
them (``bias`` mode: only the plan's ``bias_tensors`` change). Shared experts are left alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import UsageError
from ..reporting import ProgressFactory, no_progress
from ..streams import strict_json
from .plan import MaskPlan

_KEY = r"^(?P<head>(?:.*\.)?layers\.(?P<layer>\d+)\.(?:mlp|block_sparse_moe|{block})\.)(?P<rest>.+)$"
_PER_EXPERT = re.compile(r"^experts\.(?P<expert>\d+)\.(?P<tail>.+)$")
_DTYPE_BYTES = {"F64": 8, "F32": 4, "I64": 8, "I32": 4, "BF16": 2, "F16": 2, "I16": 2, "U8": 1, "I8": 1, "BOOL": 1}


def _expert_dim(tensor, num_experts: int) -> int | None:
    if tensor.dim() and tensor.shape[0] == num_experts:
        return 0
    if tensor.dim() == 2 and tensor.shape[0] == 1 and tensor.shape[1] == num_experts:  # ERNIE moe_statics
        return 1
    return None


def transform(name: str, tensor, plan: MaskPlan):
    """(new name, new tensor) for one stored tensor, or None to drop it."""
    import torch

    match = re.match(_KEY.format(block=re.escape(plan.routing.get("block", "mlp"))), name)
    if not match or int(match["layer"]) not in plan.masked or not plan.masked[int(match["layer"])]:
        return name, tensor
    layer, rest = int(match["layer"]), match["rest"]
    if rest.startswith(("shared_expert", "shared_experts")):
        return name, tensor
    id_map = plan.id_map(layer)
    if plan.mode == "bias":
        if rest.endswith(plan.bias_tensors):
            dim = _expert_dim(tensor, plan.num_experts)
            tensor = tensor.clone()
            index = torch.tensor(plan.masked[layer], dtype=torch.long)
            tensor.index_fill_(dim, index, float("-inf"))
        return name, tensor
    per_expert = _PER_EXPERT.match(rest)
    if per_expert:
        expert = int(per_expert["expert"])
        if expert not in id_map:
            return None
        return f"{match['head']}experts.{id_map[expert]}.{per_expert['tail']}", tensor
    dim = _expert_dim(tensor, plan.num_experts)
    if dim is None:
        if rest.startswith("experts."):
            raise UsageError(f"cannot prune {name} {tuple(tensor.shape)}: no dimension of {plan.num_experts} experts")
        return name, tensor  # e.g. Qwen2-MoE's shared_expert_gate
    kept = torch.tensor(plan.kept(layer), dtype=torch.long)
    return name, tensor.index_select(dim, kept).contiguous()


def _source_keys(source: Path) -> list[tuple[Path, str]]:
    from safetensors import safe_open

    files = sorted(source.glob("*.safetensors"))
    if not files:
        raise UsageError(f"{source} holds no .safetensors weights (moe-mask reads safetensors only)")
    keys = []
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            keys.extend((path, key) for key in handle.keys())  # noqa: SIM118 - safe_open is not a dict
    return keys


def write_weights(source: Path, target: Path, plan: MaskPlan, *, dtype=None, shard_bytes: int = 128 << 20,
                  progress: ProgressFactory = no_progress) -> None:
    """Write the transformed weights of ``source`` into ``target`` (shards + index when more than one).

    Each source file gives its own output file(s) (a source file over ``shard_bytes`` is split), so a
    sharded checkpoint stays sharded alike and the index lists every tensor written.

    ``progress(description, total)`` (moetools.reporting) is advanced per source tensor.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    keys = _source_keys(source)
    with safe_open(str(keys[0][0]), framework="pt") as handle:
        metadata = handle.metadata() or {"format": "pt"}
    shards: list[list[tuple[Path, str]]] = [[]]
    size = 0
    previous = keys[0][0]
    for path, key in keys:  # plan output shards by the source tensors' sizes (an upper bound after pruning)
        if shards[-1] and path != previous:  # one output file per source file: the source's sharding kept
            shards.append([])
            size = 0
        previous = path
        with safe_open(str(path), framework="pt") as handle:
            info = handle.get_slice(key)
            count = 1
            for extent in info.get_shape():
                count *= extent
            nbytes = count * _DTYPE_BYTES.get(info.get_dtype(), 4)
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((path, key))
        size += nbytes
    weight_map, total = {}, 0
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    with progress("writing tensors", total=len(keys)) as bar:
        for shard, filename in zip(shards, names):
            tensors = {}
            for path in dict.fromkeys(p for p, _ in shard):
                with safe_open(str(path), framework="pt") as handle:
                    for _, key in (item for item in shard if item[0] == path):
                        result = transform(key, handle.get_tensor(key), plan)
                        bar.advance()
                        if result is None:
                            continue
                        name, tensor = result
                        if dtype is not None and tensor.is_floating_point():
                            tensor = tensor.to(dtype)
                        tensors[name] = tensor
                        weight_map[name] = filename
                        total += tensor.numel() * tensor.element_size()
            save_file(tensors, str(target / filename), metadata=metadata)
            del tensors
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (target / "model.safetensors.index.json").write_text(strict_json.dumps(index, indent=2) + "\n")


def write_config(source: Path, target: Path, plan: MaskPlan, record: dict, dtype_name: str | None = None) -> None:
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    if plan.mode == "pruned":
        count = plan.num_experts - len(next(iter(plan.masked.values())))
        present = [key for key in plan.expert_count_keys if key in config] or list(plan.expert_count_keys[:1])
        for key in present:  # whichever spelling the family wrote (attribute_map aliases)
            config[key] = count
    if dtype_name:
        config["dtype"] = dtype_name
    config["moe_mask"] = record
    (target / "config.json").write_text(strict_json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
