"""Prune or bias a checkpoint tensor by tensor through safetensors (``pruned`` and ``bias`` modes).

No model is loaded: each output file's header is planned first (the transformation run on the meta
device), then each tensor the mask leaves as stored is copied file to file (``copy_file_range``) and
each other one is read with plain reads (no mapping), transformed, appended and released. Peak memory is the runtime plus about one
tensor (twice the largest, while it is transformed), whatever the model's size; one output file per
source file, so the sharding is the source's.

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
from ..progress import ProgressFactory, no_progress
from ..streams import strict_json
from .plan import MaskPlan

_KEY = r"^(?P<head>(?:.*\.)?layers\.(?P<layer>\d+)\.(?:mlp|block_sparse_moe|{block})\.)(?P<rest>.+)$"
_PER_EXPERT = re.compile(r"^experts\.(?P<expert>\d+)\.(?P<tail>.+)$")


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
            index = torch.tensor(plan.masked[layer], dtype=torch.long, device=tensor.device)
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
    kept = torch.tensor(plan.kept(layer), dtype=torch.long, device=tensor.device)
    return name, tensor.index_select(dim, kept).contiguous()


def _header(path: Path) -> tuple[dict, int]:
    """A safetensors file's header (tensor name -> dtype, shape, data_offsets; ``__metadata__``) and where
    its data starts."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 0 < length <= path.stat().st_size - 8:
            raise UsageError(f"{path} is not a complete safetensors file (its header length does not fit)")
        return json.loads(handle.read(length)), 8 + length


def _torch_dtypes() -> dict:
    import torch

    names = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
             "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "U16": "uint16",
             "U32": "uint32", "U64": "uint64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
             "F8_E8M0": "float8_e8m0fnu"}
    return {key: getattr(torch, value) for key, value in names.items() if hasattr(torch, value)}


def _read_tensor(handle, info: dict, data_start: int, dtype):
    """One stored tensor read with plain file reads (no mapping whose pages stay resident)."""
    import torch

    start, end = info["data_offsets"]
    buffer = bytearray(end - start)
    handle.seek(data_start + start)
    if handle.readinto(buffer) != len(buffer):
        raise UsageError(f"{handle.name} is cut short (tensor data past its end)")
    flat = torch.frombuffer(buffer, dtype=dtype) if buffer else torch.empty(0, dtype=dtype)
    return flat.reshape(info["shape"])


def _planned(files: list[Path], plan: MaskPlan, dtype) -> list[list[tuple[str, str, object, bool]]]:
    """Per source file, in its data order: (source name, output name, output meta tensor, unchanged) of each
    tensor kept; ``unchanged``: its bytes are the stored ones.

    The transformation runs once on the meta device, so every output header is known before any data is read.
    """
    import torch

    dtypes = _torch_dtypes()
    planned = []
    for path in files:
        header, _ = _header(path)
        header.pop("__metadata__", None)
        entries = []
        for key, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            if info["dtype"] not in dtypes:
                raise UsageError(f"{path}: tensor {key} has dtype {info['dtype']}, which this moe-mask cannot read")
            stored = torch.empty(info["shape"], dtype=dtypes[info["dtype"]], device="meta")
            result = transform(key, stored, plan)
            if result is None:
                continue
            name, meta = result
            # the stored bytes are the output's: copied file to file, never read into Python
            unchanged = meta is stored and (dtype is None or not meta.is_floating_point() or meta.dtype == dtype)
            if dtype is not None and meta.is_floating_point():
                meta = meta.to(dtype)
            entries.append((key, name, meta, unchanged))
        planned.append(entries)
    return planned


def _output_header(entries, metadata: dict) -> bytes:
    names = {value: key for key, value in _torch_dtypes().items()}
    header, offset = {"__metadata__": metadata}, 0
    for _, name, meta, _ in entries:
        size = meta.numel() * meta.element_size()
        header[name] = {"dtype": names[meta.dtype], "shape": list(meta.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return len(raw).to_bytes(8, "little") + raw


def _copy_range(source, out, offset: int, count: int) -> None:
    """``count`` bytes of ``source`` from ``offset`` appended to ``out`` (flushed): in the kernel
    (``copy_file_range``) where it can, else through a 16 MB buffer."""
    import os

    source_fd, out_fd = source.fileno(), out.fileno()
    position = out.tell()
    if hasattr(os, "copy_file_range"):
        try:
            while count:
                done = os.copy_file_range(source_fd, out_fd, count, offset, position)
                if done == 0:
                    raise UsageError(f"{source.name} is cut short (tensor data past its end)")
                offset, position, count = offset + done, position + done, count - done
            out.seek(position)
            return
        except OSError:  # another file system, an old kernel: the same bytes through a buffer
            pass
    out.seek(position)
    while count:
        block = os.pread(source_fd, min(count, 16 << 20), offset)
        if not block:
            raise UsageError(f"{source.name} is cut short (tensor data past its end)")
        out.write(block)
        offset, count = offset + len(block), count - len(block)
    out.flush()


class _CopyRun:
    """Stored tensors copied unchanged, merged while they lie back to back in the source: one
    ``copy_file_range`` per run of kept tensors instead of one per tensor (a per-expert checkpoint
    keeps thousands of small tensors in long runs between the dropped experts)."""

    def __init__(self, handle, out, data_start: int):
        self.handle, self.out, self.data_start = handle, out, data_start
        self.start = self.end = None

    def add(self, start: int, end: int) -> None:
        if self.end is not None and start == self.end:
            self.end = end
            return
        self.flush()
        self.start, self.end = start, end

    def flush(self) -> None:
        if self.start is not None and self.end > self.start:
            self.out.flush()
            _copy_range(self.handle, self.out, self.data_start + self.start, self.end - self.start)
        self.start = self.end = None


def write_weights(source: Path, target: Path, plan: MaskPlan, *, dtype=None,
                  progress: ProgressFactory = no_progress) -> None:
    """Write the transformed weights of ``source`` into ``target`` (files + index when more than one).

    One output file per source file (a file left with no tensor is not written): a sharded checkpoint
    stays sharded alike and the index lists every tensor written. Tensor by tensor: a tensor the mask
    leaves as stored (renamed or not) is copied file to file in the kernel; any other is read with
    plain file reads, transformed, appended to its output file and released, so the memory beyond
    the runtime is about one tensor, whatever the model's size; each output's header is planned first
    (on the meta device), so nothing is held back until a shard is complete.

    ``progress(description, total)`` (moetools.progress) is advanced per source tensor.
    """
    import torch

    files = sorted(source.glob("*.safetensors"))
    if not files:
        raise UsageError(f"{source} holds no .safetensors weights (moe-mask reads safetensors only)")
    metadata = _header(files[0])[0].get("__metadata__") or {"format": "pt"}
    planned = _planned(files, plan, dtype)
    kept = [(path, entries) for path, entries in zip(files, planned) if entries]
    names = (["model.safetensors"] if len(kept) <= 1 else
             [f"model-{i + 1:05d}-of-{len(kept):05d}.safetensors" for i in range(len(kept))])
    dtypes = _torch_dtypes()
    weight_map, total = {}, 0
    stored = sum(len([key for key in _header(path)[0] if key != "__metadata__"]) for path in files)
    with progress("writing tensors", total=stored) as bar:
        for (path, entries), filename in zip(kept, names):
            header, data_start = _header(path)
            with open(path, "rb") as handle, open(target / filename, "wb") as out:
                out.write(_output_header(entries, metadata))
                run = _CopyRun(handle, out, data_start)
                for key, name, meta, unchanged in entries:
                    info = header[key]
                    if unchanged:
                        run.add(*info["data_offsets"])
                    else:
                        run.flush()
                        _, tensor = transform(key, _read_tensor(handle, info, data_start, dtypes[info["dtype"]]),
                                              plan)
                        tensor = tensor.to(meta.dtype).contiguous()
                        if tuple(tensor.shape) != tuple(meta.shape):  # plan and data disagree: never write it
                            raise UsageError(f"{key}: transformed to {tuple(tensor.shape)}, "
                                             f"planned {tuple(meta.shape)}")
                        out.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
                        del tensor
                    weight_map[name] = filename
                    total += meta.numel() * meta.element_size()
                    bar.advance()
                run.flush()
        bar.advance(stored - sum(len(entries) for _, entries in kept))  # the tensors dropped
    if len(kept) > 1:
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
