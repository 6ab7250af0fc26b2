"""Write a masked model directory (formats/mask.md) that transformers loads without moetools.

The mask is planned on the model built on the meta device (no weights). ``pruned`` and ``bias``
directories are written tensor by tensor through safetensors (:mod:`moetools.mask.stream`: memory
about two 128 MB shards, whatever the model's size); ``remote`` ones load the model once and save it
in the layout its modules hold (custom-code classes get no checkpoint conversion from transformers).
Both keep the source's dtype (unless ``--dtype``) and its sharding (:mod:`moetools.models.sharding`).
Everything goes into a temporary directory beside OUT, renamed to OUT at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UsageError
from ..reporting import ProgressFactory, no_progress
from . import remote, stream
from .plan import MaskPlan, plan_mask

MASK_VERSION = 1
RECORD_FILE = "moe_mask.json"
SEMANTICS = ("a masked expert is never selected; every other gate is what the family's router computes when "
             "the masked experts' router logits are -inf")
#: files of the source directory that save_pretrained writes itself (or that must not travel)
_NOT_COPIED = {"config.json", RECORD_FILE}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".index.json", ".py", ".pyc")


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


def _meta_model(source: Path):
    """The model of ``source`` on the meta device (structure only, no memory) and its adapter.

    Loaded through the one loader, so weights that do not belong to the config (missing,
    unexpected or misshapen tensors) are refused here, before anything is written.
    """
    from ..models.loader import load_model

    loaded = load_model(source, device_map="meta", tokenizer=False)  # ModelError naming the directory
    return loaded.model, loaded.adapter


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


def mask_directory(source, experts_path, out, *, force: bool = False, dtype: str = "auto", log=None,
                   progress: ProgressFactory = no_progress) -> dict:
    """Mask the model in ``source`` with the experts file ``experts_path``; write the directory ``out``.

    ``progress`` (a moetools.reporting factory) is advanced per tensor written (not in ``remote``
    mode, where transformers' save_pretrained writes the weights).

    Returns the ``moe_mask`` record. UsageError/FormatError (exit 2) for a bad experts file, a set
    scored on another model, ids out of range, a layer emptied or left with fewer than top-k experts.
    """
    from ..models import load_model, model_identity
    from ..models.loader import torch_dtype
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
    model, adapter = _meta_model(source)
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
        if plan.mode == "remote":
            # the tensors as the modules hold them (fused experts): transformers applies no checkpoint
            # conversion to custom-code classes
            from ..models.sharding import DEFAULT_SHARD, shard_limit

            loaded = load_model(source, dtype=dtype, tokenizer=False)
            loaded.model.save_pretrained(temporary, save_original_format=False,
                                         max_shard_size=shard_limit(source) or DEFAULT_SHARD)
            del loaded
            config = json.loads((temporary / "config.json").read_text(encoding="utf-8"))
            config.update(remote.write_code(temporary, plan.model_type))
            config["moe_mask"] = record
            (temporary / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                                                   encoding="utf-8")
        else:
            stream.write_weights(source, temporary, plan, dtype=None if dtype == "auto" else torch_dtype(dtype),
                                 progress=progress)
            stream.write_config(source, temporary, plan, record, None if dtype == "auto" else dtype)
        (temporary / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        _copy_side_files(source, temporary)
        _publish(temporary, out, force)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return record
