"""How a checkpoint directory is sharded and in which dtype, so a tool writing a model from it keeps both.

Published checkpoints are split over ``model-0000i-of-0000n.safetensors`` files listed in
``model.safetensors.index.json``; a checkpoint moetools writes from one keeps that: whole-model
writers (``moe-tune merge``, moe-mask ``remote``) pass :func:`shard_limit` as ``save_pretrained``'s
``max_shard_size``; the tensor-by-tensor writer (moe-mask ``pruned``/``bias``) writes one output file
per source file.

    save_pretrained(out, max_shard_size=shard_limit(source) or DEFAULT_SHARD)
"""

from __future__ import annotations

from pathlib import Path

INDEX_FILE = "model.safetensors.index.json"
#: the limit of a whole-model write from an unsharded source (transformers' own default is 50 GB)
DEFAULT_SHARD = 256 << 20


def is_sharded(directory) -> bool:
    """True when the directory's weights are several safetensors files with an index."""
    directory = Path(directory)
    return (directory / INDEX_FILE).is_file() and len(list(directory.glob("*.safetensors"))) > 1


def shard_limit(directory) -> int | None:
    """The largest shard's size in bytes for a sharded directory (the limit it was written with, to
    within a header), or None for one weights file."""
    if not is_sharded(directory):
        return None
    return max(path.stat().st_size for path in Path(directory).glob("*.safetensors"))





def checkpoint_dtype(directory):
    """The torch dtype a directory's weights are stored in: config.json's ``dtype`` (``torch_dtype``),
    else the first floating tensor's; None when neither says."""
    import json

    import torch

    directory = Path(directory)
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    name = config.get("dtype") or config.get("torch_dtype")
    if isinstance(name, str) and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    from safetensors import safe_open

    table = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                dtype = table.get(handle.get_slice(key).get_dtype())
                if dtype is not None:
                    return dtype
    return None



def quantization_method(directory) -> str | None:
    """config.json's ``quantization_config.quant_method`` (``"mxfp4"``, ``"fp8"``, ...), or None."""
    import json

    try:
        config = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    quantization = config.get("quantization_config") if isinstance(config, dict) else None
    if not quantization:
        return None
    return str(quantization.get("quant_method") or "unknown") if isinstance(quantization, dict) else "unknown"
__all__ = ["DEFAULT_SHARD", "INDEX_FILE", "checkpoint_dtype", "is_sharded", "quantization_method", "shard_limit"]
