"""moe-tune's adapter directory (formats/tune.md) and ``moe-tune merge``.

``OUT/`` after a finished run:

- ``tune.json``: format name and version, mode, options, the base model's identity (fingerprint),
  the slice layout of every fused tensor the adapter touches, LoRA settings, counts; written last,
  so a directory without it is not an adapter;
- ``adapter.safetensors``: ``full.<param>`` (whole parameters that trained: full, attention-router,
  stage 1), ``slice.<param>`` (``[k, ...]`` selected experts' slices), ``lora_A.<param>`` /
  ``lora_B.<param>`` (LoRA on selected experts); absent for ``lora``;
- ``adapter_config.json`` + ``adapter_model.safetensors``: peft's own files (``lora`` mode),
  loadable with ``PeftModel.from_pretrained(base, OUT)``;
- ``experts.json``: the expert set tuned (the given one, or das-two-stage's choice).

``merge`` loads the base, checks its fingerprint, applies the adapter with the arithmetic training
used, marks the config (``moetools_tuned``: base fingerprint, mode, adapter path) so the merged
model's fingerprint differs from its base's, and writes a standard checkpoint atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import FormatError, ModelMismatchError, UsageError
from ..streams import strict_json
from ..streams.files import create_directory, write_file_atomic
from ..streams.outputs import check_output

FORMAT = "moe-tune-adapter"
VERSION = 1
TENSORS = "adapter.safetensors"
META = "tune.json"


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    from safetensors.torch import save_file

    partial = path.with_name(path.name + ".partial")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(partial),
              metadata={k: strict_json.dumps(v) for k, v in metadata.items()})
    os.replace(partial, path)


def save_adapter(tuner, summary: dict, model_state: dict | None = None) -> None:
    """Write the adapter of a finished :class:`~moetools.tune.loop.Tuner` run into its output
    (``model_state``: the model's full state dict, gathered when FSDP shards the model)."""
    from dataclasses import asdict

    out = tuner.out
    (out / META).unlink(missing_ok=True)  # the directory is not an adapter until tune.json is back
    tensors: dict[str, torch.Tensor] = {}
    named = model_state if model_state is not None else dict(tuner.model.named_parameters())
    whole = set(tuner.changed)
    if tuner.peft is None:
        whole |= {name[len("model."):] for name, _ in tuner.trainable if name.startswith("model.")}
    for name in sorted(whole):
        tensors[f"full.{name}"] = named[name]
    slices = tuner.module.slices
    tensors.update(slices.adapter_tensors(reuse_gradients=True))  # training is done: the gradients are dead
    layout = {piece.name: piece.describe() for piece in slices.slices if slices.trained(piece)}
    if tuner.peft is not None:
        tuner.peft.save_pretrained(str(out))
    else:
        _save_tensors(out / TENSORS, tensors, {"format": FORMAT, "run_id": tuner.run_id})
    if tuner.chosen is not None and tuner.options.mode != "das-two-stage":
        from ..select import write_experts

        write_experts(out / "experts.json", tuner.chosen)
    kind = tuner.stage_kind
    meta = {"format": FORMAT, "version": VERSION, "run_id": tuner.run_id, "mode": tuner.options.mode,
            "stages": [{"kind": k, "steps": s} for k, s in tuner.plan],
            "base": tuner.identity, "base_path": str(Path(tuner.options.model).resolve()),
            "peft": tuner.peft is not None, "whole_parameters": sorted(whole), "slices": layout,
            "lora": ({"rank": tuner.options.lora_rank, "alpha": tuner.options.lora_alpha,
                      "scale": tuner.options.lora_alpha / tuner.options.lora_rank}
                     if kind in ("lora", "lora-experts") else None),
            "experts_file": "experts.json" if (out / "experts.json").exists() else None,
            "trainable_parameters": summary["trainable_parameters"],
            "adapter_parameters": sum(t.numel() for t in tensors.values()) if tuner.peft is None else
            summary["trainable_parameters"],
            "summary": summary, "options": asdict(tuner.options)}
    write_file_atomic(out / META, (strict_json.dumps(meta, indent=1) + "\n").encode("utf-8"))


MODE_NAMES = ("full", "experts", "attention-router", "das-two-stage", "lora", "lora-experts")


def _is_int(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_tune_meta(meta, where: str = "tune.json") -> None:
    """Validate a tune.json object (formats/tune.md); FormatError naming the first problem."""
    if not isinstance(meta, dict):
        raise FormatError(f"{where}: not a JSON object")
    if meta.get("format") != FORMAT:
        raise FormatError(f"{where}: 'format' is not {FORMAT!r}: not a moe-tune adapter")
    if not _is_int(meta.get("version"), 1):
        raise FormatError(f"{where}: 'version' must be a positive integer")
    if meta["version"] > VERSION:
        raise FormatError(f"{where}: version {meta['version']} is newer than this moe-tune reads ({VERSION})")
    if meta.get("mode") not in MODE_NAMES:
        raise FormatError(f"{where}: unknown mode {meta.get('mode')!r}")
    if "run_id" in meta and not (isinstance(meta["run_id"], str) and meta["run_id"]):
        raise FormatError(f"{where}: 'run_id' must be a non-empty string")
    base = meta.get("base")
    if not isinstance(base, dict) or not isinstance(base.get("fingerprint"), str):
        raise FormatError(f"{where}: 'base' must be the base model's identity with a 'fingerprint'")
    if not isinstance(meta.get("peft"), bool):
        raise FormatError(f"{where}: 'peft' must be true or false")
    whole = meta.get("whole_parameters")
    if not isinstance(whole, list) or not all(isinstance(n, str) for n in whole):
        raise FormatError(f"{where}: 'whole_parameters' must be a list of parameter names")
    slices = meta.get("slices")
    if not isinstance(slices, dict):
        raise FormatError(f"{where}: 'slices' must be an object (parameter name -> layout)")
    for name, spec in slices.items():
        if not isinstance(spec, dict) or not _is_int(spec.get("dim")) or not _is_int(spec.get("block"), 1) \
                or not _is_int(spec.get("num"), 1):
            raise FormatError(f"{where}: slice {name!r} needs integers 'dim' >= 0, 'block' >= 1, 'num' >= 1")
        ids = spec.get("ids")
        if not isinstance(ids, list) or not ids or not all(_is_int(i) and i < spec["num"] for i in ids) \
                or len(set(ids)) != len(ids):
            raise FormatError(f"{where}: slice {name!r}: 'ids' must be distinct expert ids below num {spec['num']}")
    lora = meta.get("lora")
    if lora is not None and (not isinstance(lora, dict) or not _is_int(lora.get("rank"), 1)
                             or not isinstance(lora.get("scale"), (int, float)) or isinstance(lora.get("scale"), bool)):
        raise FormatError(f"{where}: 'lora' must be null or {{rank, alpha, scale}}")


def read_adapter(directory) -> tuple[dict, dict[str, torch.Tensor]]:
    """(tune.json, tensors) of an adapter directory; FormatError when it is not one."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / META).is_file():
        raise FormatError(f"{directory} is not a moe-tune adapter (no {META}; did the run finish?)")
    meta = read_tune_json(directory / META)
    if not meta["peft"] and not (directory / TENSORS).is_file():
        raise FormatError(f"{directory}: no {TENSORS} beside {META}")
    try:
        tensors = {} if meta["peft"] else load_file(str(directory / TENSORS))
    except Exception as error:  # noqa: BLE001 - safetensors' own error type: a truncated or damaged file
        raise FormatError(f"{directory / TENSORS}: not a readable safetensors file (truncated or damaged?): "
                          f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FormatError(f"{directory / TENSORS}: tensor {name} holds NaN or ±inf: not an adapter to merge")
    check_same_run(directory, meta)  # after the file is known to be readable
    for name in meta["whole_parameters"]:
        if f"full.{name}" not in tensors:
            raise FormatError(f"{directory / TENSORS}: no tensor full.{name} named in {META}")
    for name in meta["slices"]:
        if f"slice.{name}" not in tensors and f"lora_A.{name}" not in tensors:
            raise FormatError(f"{directory / TENSORS}: no tensor for the slices of {name} named in {META}")
    return meta, tensors


def check_same_run(directory, meta: dict) -> None:
    """FormatError unless tune.json, adapter.safetensors and checkpoint/ belong to one run: a run killed after
    an earlier one finished in the same directory leaves a checkpoint newer than the adapter beside it."""
    from safetensors import safe_open

    directory = Path(directory)
    run_id = meta.get("run_id")
    stale = (f"{directory}: {META} is not the adapter of the run its checkpoint/ belongs to (a later run was "
             "stopped or killed there); finish it with moe-tune --resume, or start over with --force")
    state_path = directory / "checkpoint" / "trainer_state.json"
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise FormatError(f"{state_path}: not JSON") from None
        if state.get("run_id") != run_id:
            raise FormatError(stale)
        steps = (meta.get("summary") or {}).get("steps")
        if isinstance(state.get("step"), int) and isinstance(steps, int) and state["step"] > steps:
            raise FormatError(stale)
    if not meta["peft"] and run_id is not None:
        with safe_open(str(directory / TENSORS), framework="pt") as handle:
            written = (handle.metadata() or {}).get("run_id")
        if written is not None and json.loads(written) != run_id:
            raise FormatError(f"{directory}: {TENSORS} and {META} come from different runs")


def read_tune_json(path) -> dict:
    """A validated tune.json."""
    try:
        meta = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise FormatError(f"{path}: not UTF-8 text ({error.reason})") from None
    except json.JSONDecodeError as error:
        raise FormatError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
    check_tune_meta(meta, str(path))
    return meta


def apply_adapter(model, meta: dict, tensors: dict[str, torch.Tensor], directory=None):
    """``model`` with the adapter applied (in place, or peft's merged model); returns the model."""
    from .slices import apply_slice_tensors

    named = dict(model.named_parameters())
    with torch.no_grad():
        for name in meta.get("whole_parameters", []):
            if name not in named:
                raise FormatError(f"adapter names a parameter the model lacks: {name}")
            named[name].copy_(tensors[f"full.{name}"].to(named[name].dtype))
    lora = meta.get("lora") or {}
    apply_slice_tensors(model, tensors, meta.get("slices", {}), lora_scale=float(lora.get("scale", 1.0)))
    if meta.get("peft"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(directory)).merge_and_unload()
    return model


def _cast(model, dtype) -> None:
    """``model.to(dtype)`` as transformers loads in ``dtype``: the tensors a family keeps in float32
    (``_keep_in_fp32_modules_strict``, e.g. ERNIE's router and ``moe_statics``; in float16 also
    ``_keep_in_fp32_modules``) stay float32."""
    keep = list(getattr(model, "_keep_in_fp32_modules_strict", None) or [])
    if dtype == torch.float16:
        keep += list(getattr(model, "_keep_in_fp32_modules", None) or [])
    model.config.dtype = dtype
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point():
            tensor.data = tensor.data.to(torch.float32 if any(pattern in name for pattern in keep) else dtype)


def merge(adapter_dir, output, base: str | None = None, dtype: str = "auto", force: bool = False) -> dict:
    """Write base + adapter as a standard checkpoint to ``output`` (atomically); return its provenance.

    ``output`` is never the adapter or the base (nor a directory holding either or inside either); an
    existing one is replaced only with ``force`` and only when this suite wrote it (check_output).
    The adapter is applied in the dtype training loaded the base in; the checkpoint is written in
    ``dtype`` (``auto``: the base checkpoint's) and sharded like the base.
    """
    from ..models import model_identity
    from ..models.loader import load_model

    meta, tensors = read_adapter(adapter_dir)
    base_path = base or meta.get("base_path")
    if not base_path:
        raise UsageError("the adapter does not name its base model: give --base")
    check_output(output, inputs=[adapter_dir, base_path], force=force, directory=True)
    from ..models.checkpoint_layout import checkpoint_dtype
    from ..models.loader import DTYPE_NAMES, torch_dtype
    from .loop import refuse_quantized

    refuse_quantized(base_path)

    # the base as training loaded it (its fingerprint covers the config's dtype; the arithmetic is training's)
    tuned = (meta.get("options") or {}).get("dtype") or "float32"
    model, tokenizer, adapter = load_model(base_path, dtype=tuned if tuned in DTYPE_NAMES else "float32",
                                           device="cpu")
    identity = model_identity(model, adapter, base_path)
    expected = (meta.get("base") or {}).get("fingerprint")
    if expected and identity["fingerprint"] != expected:
        raise ModelMismatchError(f"{adapter_dir} was tuned from a model with fingerprint {expected}; "
                                 f"{base_path} has {identity['fingerprint']}")
    model = apply_adapter(model, meta, tensors, adapter_dir)
    _cast(model, torch_dtype(dtype) if dtype != "auto" else checkpoint_dtype(base_path) or model.dtype)
    provenance = {"base_fingerprint": expected, "base_name": (meta.get("base") or {}).get("name"),
                  "mode": meta["mode"], "adapter": str(Path(adapter_dir).resolve()),
                  "adapter_format": f"{FORMAT}/{meta['version']}"}
    model.config.moetools_tuned = provenance  # in config.json: the merged model never fingerprints as its base
    from ..models.checkpoint_layout import shard_limit

    limit = shard_limit(base_path)  # a sharded base gives a merged checkpoint sharded alike
    with create_directory(output, tool="moe-tune merge") as partial:  # OUTPUT.partial/, swapped in atomically
        model.save_pretrained(str(partial), **({"max_shard_size": limit} if limit else {}))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(partial))
        adapter.write_portable_code(partial)  # e.g. MONET's code and auto_map: loads without moetools
        (partial / "moetools_tuned.json").write_text(strict_json.dumps(provenance, indent=1) + "\n")
    return provenance


__all__ = ["FORMAT", "META", "TENSORS", "VERSION", "apply_adapter", "check_tune_meta", "merge", "read_adapter",
           "read_tune_json", "save_adapter"]
