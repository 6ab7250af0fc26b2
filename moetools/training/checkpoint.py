"""Checkpoints without pickle: model, optimizer, schedule, RNG and data position as safetensors + JSON.

Layout of ``OUT/checkpoint/`` (replaced atomically: written to ``checkpoint.partial`` and renamed):

- ``model.safetensors``: the unwrapped model's state dict (BatchNorm running statistics included);
- ``optimizer.safetensors`` + ``optimizer.json``: ``torch.optim`` state flattened: every tensor
  of ``state[i][key]`` stored as ``state.{i}.{key}``, the rest (param_groups, scalars) in JSON;
- ``rng.safetensors``: torch CPU (and CUDA) generator states as uint8 tensors;
- ``trainer_state.json``: step, schedule state, data position, the run's settings and log offset.

Under ``--fsdp`` the same files are written: the full state dicts are gathered on rank 0 first
(:mod:`.sharding`) and passed in, and a resume shards them back into the model and optimizer.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file, save_model

from ..errors import MoetoolsError, TrainingDivergedError
from ..streams import strict_json
from ..streams.files import create_directory


def stop_if_not_finite(step: int, values: dict, out: Path, *, created: bool, main: bool, what: str) -> None:
    """Training stops at the first non-finite loss or gradient norm (one rule for moe-tune and monet-train).

    ``values``: the step's losses and gradient norm (the same on every rank: all-reduced). Nothing
    of the step is logged or applied; no ``what`` (adapter, model) is written. ``OUT/checkpoint``
    stays when there is one, so ``--resume`` (with other settings) continues from it; without one,
    ``out`` is removed if this run created it. Raises :class:`TrainingDivergedError` (exit 1).
    """
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if not bad:
        return
    state = out / "checkpoint" / "trainer_state.json"
    if state.exists():
        saved = json.loads(state.read_text()).get("step")
        kept = f"{out / 'checkpoint'} (step {saved}) is kept: --resume continues from it"
    elif created:
        if main:
            shutil.rmtree(out, ignore_errors=True)
        kept = f"{out} removed (no checkpoint yet)"
    else:
        kept = "no checkpoint yet"
    found = ", ".join(f"{name} {value}" for name, value in bad.items())
    raise TrainingDivergedError(f"step {step}: {found}: training diverged (non-finite); stopped without writing "
                                f"the {what}; {kept}; try a lower --lr or --grad-clip")


class WarmupCosine:
    """Linear warmup to ``peak_lr`` over ``warmup`` steps, then cosine decay to ``min_lr`` at ``total`` steps."""

    def __init__(self, peak_lr: float, warmup: int, total: int, min_lr: float = 0.0):
        self.peak_lr, self.warmup, self.total, self.min_lr = peak_lr, warmup, total, min_lr
        self.step = 0

    def lr(self, step: int | None = None) -> float:
        step = self.step if step is None else step
        if self.warmup and step < self.warmup:
            return self.peak_lr * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1 + math.cos(math.pi * progress))

    def apply(self, optimizer) -> float:
        lr = self.lr()
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"kind": "warmup_cosine", "peak_lr": self.peak_lr, "warmup": self.warmup, "total": self.total,
                "min_lr": self.min_lr, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


def flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (safetensors) and a JSON-able rest."""
    tensors, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The inverse of :func:`flatten_optimizer_state`."""
    state: dict[int, dict] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, torch.Tensor]:
    states = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"torch_cuda_{index}"] = state
    return states


def restore_rng(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch_cpu"])
    cuda = [states[k] for k in sorted(states) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def tied_parameter_names(model) -> list[list[str]]:
    """Groups (sorted) of parameter names that share one tensor (tied weights), e.g. an LM head tied to the embeddings."""
    groups: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(parameter), []).append(name)
    return [sorted(names) for names in groups.values() if len(names) > 1]


def save_model_state(state_dict: dict[str, torch.Tensor], filename: str, tied: list[list[str]]) -> None:
    """``safetensors.torch.save_model`` for a state dict already gathered: tied names kept once
    (the first in sorted order, the others named in the metadata, as ``save_model`` does)."""
    state_dict, metadata = dict(state_dict), {}
    for names in tied:
        for name in names[1:]:
            if name in state_dict and names[0] in state_dict:
                del state_dict[name]
                metadata[name] = names[0]
    save_file({k: v.contiguous() for k, v in state_dict.items()}, filename, metadata=metadata or None)


def save_checkpoint(directory: Path, model, optimizer, trainer_state: dict, *, model_state: dict | None = None,
                    optimizer_state: dict | None = None, tied: list[list[str]] | None = None) -> None:
    """Write ``directory`` atomically (``directory.partial`` then rename over the old one).

    ``model_state`` / ``optimizer_state`` (FSDP: gathered on rank 0) replace ``model.state_dict()``
    and ``optimizer.state_dict()``; ``tied`` names the tied parameters of ``model_state``.
    """
    with create_directory(directory) as partial:  # NAME.partial/, then swapped in through NAME.old
        if model_state is None:
            save_model(model, str(partial / "model.safetensors"))
        else:
            save_model_state(model_state, str(partial / "model.safetensors"), tied or [])
        tensors, meta = flatten_optimizer_state(optimizer.state_dict() if optimizer_state is None
                                                else optimizer_state)
        save_file(tensors, str(partial / "optimizer.safetensors"))
        (partial / "optimizer.json").write_text(strict_json.dumps(meta))
        save_file(rng_state(), str(partial / "rng.safetensors"))
        (partial / "trainer_state.json").write_text(strict_json.dumps(trainer_state, indent=1))


def load_checkpoint(directory: Path, model, optimizer, *, sharded: bool = False,
                    tied: list[list[str]] | None = None) -> dict:
    """Restore model, optimizer and RNG in place; return the trainer state.

    ``sharded``: ``model`` is FSDP-sharded; every rank reads the full files and keeps its shards.
    """
    directory = Path(directory)
    if not (directory / "trainer_state.json").exists():
        raise MoetoolsError(f"--resume: no checkpoint in {directory}")
    meta = json.loads((directory / "optimizer.json").read_text())
    if sharded:
        from .sharding import load_full_state

        model_state = load_file(str(directory / "model.safetensors"))
        for names in tied or []:  # names save_model_state / save_model dropped
            kept = next((name for name in names if name in model_state), None)
            for name in names:
                if kept is not None and name not in model_state:
                    model_state[name] = model_state[kept]
        optimizer_state = unflatten_optimizer_state(load_file(str(directory / "optimizer.safetensors")), meta)
        load_full_state(model, optimizer, model_state, optimizer_state)
    else:
        from safetensors.torch import load_model

        _missing, _unexpected = load_model(model, str(directory / "model.safetensors"), strict=True)
        device = next(model.parameters()).device
        tensors = {k: v.to(device) for k, v in load_file(str(directory / "optimizer.safetensors")).items()}
        optimizer.load_state_dict(unflatten_optimizer_state(tensors, meta))
    restore_rng(load_file(str(directory / "rng.safetensors")))
    return json.loads((directory / "trainer_state.json").read_text())


__all__ = [
    "WarmupCosine",
    "flatten_optimizer_state",
    "load_checkpoint",
    "save_checkpoint",
    "save_model_state",
    "tied_parameter_names",
    "unflatten_optimizer_state",
]
