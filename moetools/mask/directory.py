"""Write a masked model directory (formats/mask.md) that transformers loads without moetools.

The mask is planned on the model built on the meta device (no weights). ``pruned`` and ``bias``
directories are written tensor by tensor in the safetensors format (:mod:`moetools.mask.stream`:
memory about one tensor beyond the runtime, whatever the model's size); ``remote`` ones load the model once and save it
in the layout its modules hold (custom-code classes get no checkpoint conversion from transformers).
Both keep the source's dtype (unless ``--dtype``) and its sharding (:mod:`moetools.models.checkpoint_layout`).
Everything goes into ``OUT.partial/`` beside OUT (with the suite's marker, modes from the umask),
swapped in for OUT at the end (moetools.streams.files.create_directory).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import UsageError
from ..progress import ProgressFactory, no_progress
from ..streams import strict_json
from ..streams.files import create_directory, file_sha256
from ..streams.outputs import MARKER, check_output
from . import remote, stream
from .plan import MaskPlan, plan_mask

MASK_VERSION = 2  # v2: the routing rule in the record (v1 directories: see mask_record_problem)
RECORD_FILE = "moe_mask.json"
SEMANTICS = ("a masked expert is never selected; every other gate is what the family's router computes when "
             "the masked experts' router logits are -inf")
#: files of the source directory that save_pretrained writes itself (or that must not travel)
_NOT_COPIED = {"config.json", RECORD_FILE, MARKER}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".index.json", ".py", ".pyc")


def mask_record(plan: MaskPlan, identity: dict, chosen, experts_path) -> dict:
    """The ``moe_mask`` block of config.json / moe_mask.json (formats/mask.md)."""
    from .. import __version__

    source = None
    if experts_path not in (None, "-") and Path(experts_path).is_file():
        source = {"path": str(Path(experts_path).resolve()), "sha256": file_sha256(experts_path)}
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


def mask_record_problem(record) -> str | None:
    """Why moetools cannot use a masked directory with this ``moe_mask`` record (one line), or None.

    ``pruned`` and ``bias`` directories are standard checkpoints: every version loads. A ``remote``
    one runs the routing code it carries: from v2 on that code reads the record's ``routing``; a v1
    directory's code is an older moe-mask's, which moetools no longer vouches for.
    """
    from .routing import routing_problem

    if not isinstance(record, dict):
        return "moe_mask is not an object"
    version, mode = record.get("version"), record.get("mode")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= MASK_VERSION:
        return f"moe_mask version {version!r}: this moe-mask reads versions 1 to {MASK_VERSION}"
    if mode not in ("pruned", "bias", "remote"):
        return f"moe_mask mode {mode!r} is not pruned, bias or remote"
    if mode == "remote" and version < 2:
        return ("a remote-mode directory written by an older moe-mask (moe_mask v1): mask its base again, "
                "or load it yourself with trust_remote_code=True if you trust it")
    if mode == "remote" or "routing" in record:
        return routing_problem(record.get("routing"))
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
            shutil.copyfile(path, target / path.name)  # modes from the umask, as save_pretrained's files


def mask_directory(source, experts_path, out, *, force: bool = False, dtype: str = "auto", log=None,
                   progress: ProgressFactory = no_progress) -> dict:
    """Mask the model in ``source`` with the experts file ``experts_path``; write the directory ``out``.

    ``progress`` (a moetools.progress factory) is advanced per tensor written (not in ``remote``
    mode, where transformers' save_pretrained writes the weights).

    Returns the ``moe_mask`` record. UsageError/FormatError (exit 2) for a bad experts file, a set
    scored on another model, ids out of range, a layer emptied or left with fewer than top-k experts.
    """
    from ..models import load_model, model_identity
    from ..models.loader import torch_dtype
    from ..select import read_experts
    from .memory import expert_dict

    source, out = Path(source), Path(out)
    # never the model, a directory holding it or one inside it; an existing OUT only with force, and only
    # when moetools wrote it (formats/README.md, "Outputs")
    check_output(out, inputs=[source, experts_path], force=force, directory=True)
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
    if log and plan.shared_note:
        log(f"note: {plan.shared_note}")
    # OUT.partial/ (modes from the umask), swapped in for OUT when complete (moetools.streams.files)
    with create_directory(out, tool="moe-mask") as temporary:
        if plan.mode == "remote":
            # the tensors as the modules hold them (fused experts): transformers applies no checkpoint
            # conversion to custom-code classes
            from ..models.checkpoint_layout import DEFAULT_SHARD, shard_limit

            loaded = load_model(source, dtype=dtype, tokenizer=False)
            loaded.model.save_pretrained(temporary, save_original_format=False,
                                         max_shard_size=shard_limit(source) or DEFAULT_SHARD)
            del loaded
            config = json.loads((temporary / "config.json").read_text(encoding="utf-8"))
            config.update(remote.write_code(temporary, plan.model_type))
            config["moe_mask"] = record
            (temporary / "config.json").write_text(strict_json.dumps(config, indent=2, sort_keys=True) + "\n",
                                                   encoding="utf-8")
        else:
            stream.write_weights(source, temporary, plan, dtype=None if dtype == "auto" else torch_dtype(dtype),
                                 progress=progress)
            stream.write_config(source, temporary, plan, record, None if dtype == "auto" else dtype)
        (temporary / RECORD_FILE).write_text(strict_json.dumps(record, indent=1) + "\n", encoding="utf-8")
        _copy_side_files(source, temporary)
    return record
