"""Processes and devices for monet-train and moe-tune: the torchrun process group, DDP or FSDP around
the model, and bf16 autocast.

Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1) every process joins one process group
(NCCL on CUDA, gloo on CPU); each takes rows ``rank::N`` of the global batch. Without ``--fsdp``
the model is wrapped in DDP (gradients averaged over processes); with it, every decoder layer and
then the root are sharded with FSDP2 ``fully_shard`` (:mod:`.sharding`): the same averaged
gradients, so one step equals DDP's on the same global batch. Only rank 0 writes files.
"""

from __future__ import annotations

import os

import torch

from ..errors import UsageError


def world_size() -> int:
    """The number of torchrun processes (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_fsdp(fsdp: bool) -> None:
    """``--fsdp`` outside torchrun (or with one process) is a usage error: nothing to shard over."""
    if fsdp and world_size() < 2:
        raise UsageError("--fsdp shards the model over torchrun processes: run under torchrun with "
                         "--nproc_per_node 2 or more (WORLD_SIZE is 1 here)")


class Distributed:
    """This process's rank, world size and device; joins the process group under torchrun."""

    def __init__(self):
        self.world = world_size()
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def mean(self, value: float) -> float:
        """``value`` averaged over the processes (a collective)."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return float(tensor.item()) / self.world

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any (a collective)."""
        if self.world == 1:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(tensor)
        return bool(tensor.item() > 0)

    def close(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def bf16_autocast_enabled(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast(device: torch.device):
    """bf16 autocast on a GPU that has it; nothing elsewhere (CPU runs in the weights' dtype)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_autocast_enabled(device))


def shard(model, dist: Distributed):
    """FSDP2 over ``dist``'s processes (in place, before the optimizer is built); return ``model``."""
    from .sharding import shard_model

    return shard_model(model, dist.device, dist.world)


def data_parallel(module, dist: Distributed, *, fsdp: bool, find_unused_parameters: bool = False):
    """DDP around ``module`` under torchrun without FSDP; ``module`` itself otherwise (one process, or
    already sharded by :func:`shard`)."""
    if dist.world == 1 or fsdp:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[dist.device] if dist.device.type == "cuda" else None,
                                   find_unused_parameters=find_unused_parameters)


def clip_gradients(parameters, max_norm: float, *, fsdp: bool) -> float:
    """Clip to a global 2-norm of ``max_norm`` (FSDP: over every process's shards); return the norm."""
    parameters = list(parameters)
    if fsdp:
        from .sharding import clip_grad_norm

        return clip_grad_norm(parameters, max_norm)
    return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))


__all__ = ["Distributed", "autocast", "bf16_autocast_enabled", "check_fsdp", "clip_gradients", "data_parallel", "shard",
           "world_size"]
