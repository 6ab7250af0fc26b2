"""Write a masked model directory (formats/mask.md) that transformers loads without moetools.

One copy of the weights in memory: the model is loaded once, pruned or edited in place
(``index_select`` per tensor, the old tensor freed as it is replaced), and saved with
``save_pretrained`` (safetensors) into a temporary directory beside OUT, renamed to OUT at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UsageError
from . import remote
from .plan import EXPERT_COUNT_KEY, MaskPlan, plan_mask

MASK_VERSION = 1
RECORD_FILE = "moe_mask.json"
SEMANTICS = ("a masked expert is never selected; every other gate is what the family's router computes when "
             "the masked experts' router logits are -inf")
#: files of the source directory that save_pretrained writes itself (or that must not travel)
_NOT_COPIED = {"config.json", "generation_config.json", RECORD_FILE}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".index.json", ".py", ".pyc")


def _prune_tensor(tensor, kept, num_experts: int):
    """``tensor`` with only the ``kept`` experts along its expert dimension (dim 0, or dim 1 for (1, E))."""
    if tensor.shape[0] == num_experts:
        return tensor.index_select(0, kept.to(tensor.device))
    if tensor.dim() > 1 and tensor.shape[1] == num_experts:  # ERNIE moe_statics bias (1, E)
        return tensor.index_select(1, kept.to(tensor.device))
    raise UsageError(f"cannot prune a tensor of shape {tuple(tensor.shape)}: no dimension of {num_experts} experts")


def _replace_tensors(module, kept, num_experts: int) -> None:
    import torch

    for owner in module.modules():
        for name, parameter in list(owner._parameters.items()):
            if parameter is not None:
                owner._parameters[name] = torch.nn.Parameter(_prune_tensor(parameter.data, kept, num_experts),
                                                             requires_grad=parameter.requires_grad)
        for name, buffer in list(owner._buffers.items()):
            if buffer is not None and buffer.dim() and num_experts in buffer.shape[:2]:
                owner._buffers[name] = _prune_tensor(buffer, kept, num_experts)


def prune(model, adapter, plan: MaskPlan) -> None:
    """Remove the masked experts' weights and router rows/biases in place; update the expert count."""
    import torch

    count = plan.num_experts - len(next(iter(plan.masked.values())))
    for layer in adapter.moe_layers():
        kept = torch.tensor(plan.kept(layer.index), dtype=torch.long)
        _replace_tensors(layer.router, kept, plan.num_experts)
        _replace_tensors(layer.experts, kept, plan.num_experts)
        for module in (layer.router, layer.experts, layer.block):
            if hasattr(module, "num_experts"):
                module.num_experts = count
    setattr(model.config, EXPERT_COUNT_KEY[plan.model_type], count)


def set_bias(adapter, plan: MaskPlan) -> None:
    """Router bias / score-correction bias −∞ on the masked experts (every expert kept)."""
    import torch

    for layer in adapter.moe_layers():
        ids = torch.tensor(plan.masked[layer.index], dtype=torch.long)
        if not len(ids):
            continue
        router = layer.router
        with torch.no_grad():
            if plan.model_type == "gpt_oss":
                router.bias[ids] = float("-inf")
            elif plan.model_type == "deepseek_v3":
                router.e_score_correction_bias[ids] = float("-inf")
            else:  # ERNIE-4.5: moe_statics.e_score_correction_bias (1, E)
                router.moe_statics.e_score_correction_bias[:, ids] = float("-inf")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def mask_record(plan: MaskPlan, identity: dict, chosen, experts_path) -> dict:
    """The ``moe_mask`` block of config.json / moe_mask.json (formats/mask.md)."""
    from .. import __version__

    source = None
    if experts_path not in (None, "-") and Path(experts_path).is_file():
        source = {"path": str(Path(experts_path).resolve()), "sha256": _sha256(Path(experts_path))}
    return {"version": MASK_VERSION, "tool": {"name": "moe-mask", "version": __version__},
            "semantics": SEMANTICS, **plan.record(), "base": identity,
            "experts": {"file": source, "model": getattr(chosen, "model", None),
                        "provenance": getattr(chosen, "provenance", None) or None}}


def read_mask_record(directory) -> dict | None:
    """The ``moe_mask`` block of a masked directory's config.json, or None for an unmasked one."""
    path = Path(directory) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("moe_mask")
    except (OSError, ValueError):
        return None


def _copy_side_files(source: Path, target: Path) -> None:
    """Tokenizer files and the like: everything but weights, configs and code."""
    for path in source.iterdir():
        if path.is_file() and path.name not in _NOT_COPIED and not path.name.endswith(_WEIGHT_SUFFIXES) \
                and not (target / path.name).exists():
            shutil.copy2(path, target / path.name)


def _publish(temporary: Path, out: Path, force: bool) -> None:
    """Rename the finished directory onto OUT (an existing OUT only with ``force``, swapped aside first)."""
    if out.exists():
        if not force:
            raise UsageError(f"{out} exists (use --force to replace it)")
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, aside / out.name)
        os.rename(temporary, out)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(temporary, out)


def mask_directory(source, experts_path, out, *, force: bool = False, dtype: str = "auto", log=None) -> dict:
    """Mask the model in ``source`` with the experts file ``experts_path``; write the directory ``out``.

    Returns the ``moe_mask`` record. UsageError/FormatError (exit 2) for a bad experts file, a set
    scored on another model, ids out of range, a layer emptied or left with fewer than top-k experts.
    """
    from ..models import load_model, model_identity
    from ..select import read_experts
    from .memory import expert_dict

    source, out = Path(source), Path(out)
    if out.exists() and not force:
        raise UsageError(f"{out} exists (use --force to replace it)")
    if out.resolve() == source.resolve():
        raise UsageError("the output directory must differ from the model directory")
    if read_mask_record(source) is not None:
        raise UsageError(f"{source} is already masked (config.json has moe_mask): mask its base with the "
                         "union of both expert sets instead")
    loaded = load_model(source, dtype=dtype, tokenizer=False)
    model, adapter = loaded.model, loaded.adapter
    identity = model_identity(model, adapter, path=source)
    chosen = read_experts(experts_path, model=identity)
    plan = plan_mask(model, adapter, expert_dict(chosen))
    record = mask_record(plan, identity, chosen, experts_path)
    if log:
        log(f"mode {plan.mode}: {sum(len(v) for v in plan.masked.values())} experts masked in "
            f"{sum(1 for v in plan.masked.values() if v)} layers" + "".join(f"; {n}" for n in plan.notes))
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        if plan.mode == "pruned":
            prune(model, adapter, plan)
        elif plan.mode == "bias":
            set_bias(adapter, plan)
        # remote mode: the tensors as the modules hold them (fused experts), because transformers applies no
        # checkpoint conversion to custom-code classes; standard modes: the family's usual on-disk layout
        model.save_pretrained(temporary, save_original_format=plan.mode != "remote")
        config = json.loads((temporary / "config.json").read_text(encoding="utf-8"))
        if plan.mode == "remote":
            config.update(remote.write_code(temporary, plan.model_type))
        config["moe_mask"] = record
        (temporary / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (temporary / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        _copy_side_files(source, temporary)
        _publish(temporary, out, force)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return record
