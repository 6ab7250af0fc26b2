"""moe-tune's checkpoints (``OUT/checkpoint/``, the files of :mod:`moetools.training.checkpoint`): only what
changed (the trainable tensors, and in das-two-stage's stage 2 the stage-1 tensors too), not the model;
under FSDP gathered whole on rank 0 and sharded back on ``--resume``."""

from __future__ import annotations

import json
from dataclasses import asdict

import torch

from ..training import sharding
from ..training.checkpoint import restore_rng, unflatten_optimizer_state
from ..training.checkpoint import save_checkpoint as write_checkpoint


class TunerCheckpoints:
    """The checkpoint half of :class:`moetools.tune.loop.Tuner` (its options, model, module, optimizer,
    schedule, stages and output directory)."""

    def delta_state(self) -> dict[str, torch.Tensor]:
        """What changed: trainable tensors of the stage and whole parameters of earlier stages. Under FSDP
        a collective (every rank calls it; rank 0 gets the full tensors, the others nothing)."""
        if self.options.fsdp:  # one stage, whole parameters: the trainable ones of the gathered state
            full = sharding.full_model_state(self.model)
            return {name: full[name[len("model."):]] for name, _ in self.trainable} if self.dist.main else {}
        state = {name: p.detach() for name, p in self.trainable}
        named = dict(self.module.model.named_parameters()) if self.peft is None else {}
        for name in sorted(self.changed):
            if name in named:
                state[f"model.{name}"] = named[name].detach()
        return state

    def save_checkpoint(self, state: dict, log_bytes: int) -> None:
        delta = self.delta_state()
        optimizer_state = (sharding.full_optimizer_state(self.module, self.optimizer)  # a collective
                           if self.options.fsdp else None)
        if self.dist.main:
            write_checkpoint(self.checkpoint_dir, None, self.optimizer, model_state=delta, tied=[],
                            optimizer_state=optimizer_state,
                            trainer_state={**state, "stage": self.stage_index, "schedule": self.schedule.state_dict(),
                                           "log_bytes": log_bytes, "changed": sorted(self.changed),
                                           "cdas": self.cdas_log, "options": asdict(self.options),
                                           "run_id": self.run_id})
        self.dist.barrier()

    def load_checkpoint(self) -> dict:
        from safetensors.torch import load_file

        directory = self.checkpoint_dir
        saved = json.loads((directory / "trainer_state.json").read_text())
        self.run_id = saved.get("run_id") or self.run_id
        tensors = load_file(str(directory / "model.safetensors"))
        chosen = None
        if saved["stage"] > 0 and self.options.mode == "das-two-stage":
            from ..select import read_experts

            chosen = dict(read_experts(self.out / "experts.json").items())
            self.enter_stage(0)  # to name stage 1's parameters, then move on
            named = dict(self.model.named_parameters())
            with torch.no_grad():
                for name in saved["changed"]:
                    named[name].copy_(tensors[f"model.{name}"])
        self.enter_stage(saved["stage"], chosen)
        meta = json.loads((directory / "optimizer.json").read_text())
        optimizer_tensors = {k: v.to(self.dist.device) for k, v in load_file(str(directory / "optimizer.safetensors")).items()}
        optimizer_state = unflatten_optimizer_state(optimizer_tensors, meta)
        if self.options.fsdp:  # every rank reads the full files and keeps its shards
            sharding.load_full_state(self.module, self.optimizer, tensors, optimizer_state, strict=False)
        else:
            current = dict(self.module.named_parameters())
            with torch.no_grad():
                for name, tensor in tensors.items():
                    if name in current:
                        current[name].copy_(tensor)
            self.optimizer.load_state_dict(optimizer_state)
        self.changed = set(saved["changed"])
        self.schedule.load_state_dict(saved["schedule"])
        restore_rng(load_file(str(directory / "rng.safetensors")))
        self.cdas_log = saved.get("cdas", [])
        return saved


__all__ = ["TunerCheckpoints"]
