"""FSDP for monet-train and moe-tune (``--fsdp`` under torchrun): PyTorch's FSDP2 ``fully_shard``.

The model is sharded per decoder layer (the classes in ``model._no_split_modules``), then at the
root (embeddings, final norm, LM head). Parameters become DTensors sharded on dim 0 over a 1-D
mesh of all processes; FSDP2 all-gathers a layer's parameters before its forward/backward and
reduce-scatters (averages) its gradients after, so one step equals DDP's step on the same
global batch. What this module adds around that:

- **names**: FSDP2 modifies the modules in place (no wrapper), so parameter and state-dict
  names stay the plain model's;
- **buffers** (MONET's BatchNorm routing statistics, rotary tables) are not sharded: every rank
  keeps a full copy. DDP broadcasts rank 0's buffers before every forward; :func:`broadcast_buffers`
  does the same here, so running statistics (used by eval and saved) are rank 0's, as under DDP;
- **clipping** (:func:`clip_grad_norm`): the norm of the sharded gradients is a DTensor; it is
  reduced to the global norm (``full_tensor``) before the clip coefficient is applied;
- **state dicts** (:func:`full_model_state`, :func:`full_optimizer_state`, :func:`load_full_state`):
  gathered whole on rank 0 on CPU with ``torch.distributed.checkpoint.state_dict``, so checkpoints
  and the final directory are the same safetensors + JSON files as without FSDP; the optimizer
  state is re-keyed from parameter names to the integer ids ``torch.optim`` uses, and back on load.
"""

from __future__ import annotations

import warnings

import torch

from ..errors import UsageError


def shard_model(model, device: torch.device, world: int):
    """``fully_shard`` every decoder layer of ``model`` (in place), then the root; return ``model``."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    layer_classes = set(getattr(model, "_no_split_modules", None) or ())
    layers = [module for module in model.modules() if type(module).__name__ in layer_classes]
    if not layers:
        raise UsageError(f"--fsdp: no decoder layers ({', '.join(sorted(layer_classes)) or 'none named'}) "
                         f"found in {type(model).__name__}")
    # MONET layers without a router return the group's routing they were given; FSDP2's input hooks
    # made it a view, which FSDP2 warns about in case of in-place ops on it (there are none)
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPMonetDecoderLayer\) returned a view")
    mesh = init_device_mesh(device.type, (world,))
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


@torch.no_grad()
def broadcast_buffers(model) -> None:
    """Every rank's buffers := rank 0's (what DDP does before each forward with ``broadcast_buffers``)."""
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


@torch.no_grad()
def clip_grad_norm(parameters, max_norm: float) -> float:
    """Clip gradients (DTensor shards or plain tensors) to a global 2-norm of ``max_norm``; return the norm."""
    from torch.distributed.tensor import DTensor

    parameters = [p for p in parameters if p.grad is not None]
    total = torch.nn.utils.get_total_norm([p.grad for p in parameters], norm_type=2.0)
    if isinstance(total, DTensor):  # partial sums of the shards' norms: reduce to the global norm
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return float(total)


def _options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def optimizer_parameter_names(model, optimizer) -> list[str]:
    """Parameter names in ``torch.optim``'s id order (param_groups concatenated)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def full_model_state(model) -> dict[str, torch.Tensor]:
    """The unsharded state dict on CPU on rank 0 (empty elsewhere); a collective: call on every rank."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=True))


def full_optimizer_state(model, optimizer) -> dict:
    """``optimizer.state_dict()`` as without FSDP (integer ids, full tensors on CPU) on rank 0; a collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    by_name = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))
    if not by_name.get("state") and not by_name.get("param_groups"):
        return {}  # not rank 0
    index = {name: i for i, name in enumerate(optimizer_parameter_names(model, optimizer))}
    groups = [{**group, "params": [index[name] for name in group["params"]]} for group in by_name["param_groups"]]
    return {"state": {index[name]: values for name, values in by_name["state"].items()}, "param_groups": groups}


def load_full_state(model, optimizer, model_state: dict, optimizer_state: dict, *, strict: bool = True) -> None:
    """Shard full (unsharded) state dicts into ``model`` and ``optimizer``; every rank passes the same dicts.
    ``strict=False``: ``model_state`` holds only some of the parameters (moe-tune's trained ones)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, model_state, options=_options(strict=strict))
    names = optimizer_parameter_names(model, optimizer)
    groups = [{**group, "params": [names[i] for i in group["params"]]} for group in optimizer_state["param_groups"]]
    by_name = {"state": {names[int(i)]: values for i, values in optimizer_state["state"].items()},
               "param_groups": groups}
    set_optimizer_state_dict(model, optimizer, by_name, options=_options())


__all__ = ["broadcast_buffers", "clip_grad_norm", "full_model_state", "full_optimizer_state",
           "load_full_state", "optimizer_parameter_names", "shard_model"]
