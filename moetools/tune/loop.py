"""The moe-tune loop: stages, AdamW over what trains only, warmup + cosine, clipping, accumulation,
bf16 autocast on GPU, eval per file and domain, JSON-lines log, checkpoints with exact resume, DDP or
FSDP under torchrun.

Shared with monet-train (:mod:`moetools.training`): the process group, DDP and FSDP, autocast,
AdamW and its schedule, stop rules, the log, the pickle-free checkpoint files, the per-domain loss;
and (:mod:`moetools.train.data`) the seeded batch order (``block_indices``, a pure function of seed
and step, which is what makes resume exact). A checkpoint here holds only what changed (the
trainable tensors, and in das-two-stage's stage 2 the stage-1 tensors too), not the model.

``fsdp=True`` (``--fsdp``, torchrun with 2 or more processes) shards the model with FSDP2 as
monet-train does, in the modes that train whole parameters (full, attention-router): same batches,
same averaged gradients, clipping on the global norm, same log, checkpoint and adapter files.

Loss: the sum of token cross-entropies over the global batch divided by its label-token count
(every rank counts the whole global batch, which it knows), times the world size (DDP averages
gradients over ranks), so 1 process, N processes and gradient accumulation give the same gradient.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..progress import ProgressBar, ProgressFactory, log_warning, no_progress
from ..streams.outputs import check_output, finish_training_directory, prepare_training_directory
from ..train.data import block_indices
from ..training import sharding
from ..training.checkpoint import stop_if_not_finite
from ..training.distributed import Distributed, autocast, clip_gradients, data_parallel, shard
from ..training.log import TrainingLog
from ..training.loss import DomainLosses, sequence_losses, shifted
from ..training.optimizer import adamw, schedule
from ..training.options import check_loop_options
from ..training.stopping import StopRule
from . import das as das_lib
from .checkpoints import TunerCheckpoints
from .data import IGNORE, eval_rows, load_examples
from .modes import MODES, STAGE2_KINDS, attention_router_names, extra_expert_mode_names, make_peft
from .slices import SliceTrainer, expert_slices

LOG_NAME = "tune_log.jsonl"


@dataclass
class TuneOptions:
    model: str
    data: str
    output: str
    mode: str = "experts"
    experts: str | None = None          # experts.json (experts, lora-experts)
    eval: list = field(default_factory=list)
    general: str | None = None          # das-two-stage: the general set DAS contrasts with
    top: int = 6                        # das-two-stage: experts kept per layer
    stage1_steps: int = 100             # das-two-stage: attention + router steps (N1)
    stage2: str = "experts"             # das-two-stage: experts or lora-experts
    das_rows: int = 64                  # rows of each set traced for DAS
    steps: int = 100                    # steps (das-two-stage: stage 2's, N2)
    batch_size: int = 8                 # global, in sequences
    grad_accum: int = 1
    seq_len: int = 256
    lr: float = 1e-4
    min_lr: float = 0.0
    warmup: int | None = None           # default: 5% of a stage's steps
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 50
    eval_batches: int = 8
    checkpoint_every: int = 100
    stop_at_step: int | None = None
    max_minutes: float | None = None
    resume: bool = False
    fsdp: bool = False                  # shard with FSDP2 instead of DDP (torchrun, 2+ processes)
    force: bool = False                 # start over in an existing OUTPUT this suite wrote (moved to OUTPUT.old)
    lora_rank: int = 16                 # paper 003
    lora_alpha: float = 32.0
    dtype: str = "float32"
    text_field: str = "text"
    domain_field: str = "domain"


class TuneModule(nn.Module):
    """The model and the slice parameters in one module (so DDP and the optimizer see both)."""

    def __init__(self, model, slices: SliceTrainer | None = None):
        super().__init__()
        self.model = model
        self.slices = slices if slices is not None else SliceTrainer([])

    def forward(self, **kwargs):
        return self.model(**kwargs)


def stage_plan(options: TuneOptions) -> list[tuple[str, int]]:
    """[(kind, steps)] of the run."""
    if options.mode == "das-two-stage":
        return [("attention-router", options.stage1_steps), (options.stage2, options.steps)]
    return [(options.mode, options.steps)]


FSDP_MODES = ("full", "attention-router")  # whole parameters: FSDP shards them


def check_options(options: TuneOptions) -> None:
    if options.mode not in MODES:
        raise UsageError(f"unknown --mode {options.mode!r} (choose from {', '.join(MODES)})")
    if options.mode in ("experts", "lora-experts") and not options.experts:
        raise UsageError(f"--mode {options.mode} needs --experts experts.json")
    if options.mode == "das-two-stage":
        if not options.general:
            raise UsageError("--mode das-two-stage needs --general general.jsonl (DAS contrasts domain and general)")
        if options.stage2 not in STAGE2_KINDS:
            raise UsageError(f"--stage2 must be one of {', '.join(STAGE2_KINDS)}")
        if options.top < 1 or options.stage1_steps < 1:
            raise UsageError("--top and --stage1-steps must be at least 1")
    if options.fsdp and options.mode not in FSDP_MODES:
        raise UsageError(f"--fsdp shards whole parameters: --mode {' or '.join(FSDP_MODES)} (--mode "
                         f"{options.mode} trains slices or adapters of frozen tensors; run it with DDP, "
                         "without --fsdp)")
    check_loop_options(options, more_floats=("lora_alpha",))


def _freeze(model) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def _freeze_batchnorm(model) -> None:
    """Routers not trained: keep BatchNorm routing statistics (MONET) as loaded."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def refuse_quantized(model) -> None:
    """UsageError (exit 2) for a base whose checkpoint stores quantized weights (MXFP4, block FP8, ...):
    transformers dequantizes it on load, but training and merging would then write a checkpoint that
    is neither the quantized layout nor a declared dequantized one."""
    from ..models.checkpoint_layout import quantization_method

    method = quantization_method(model)
    if method:
        raise UsageError(f"{model} stores quantized weights (quantization_config quant_method {method!r}); "
                         "moe-tune trains and merges unquantized checkpoints only: dequantize it first "
                         "(load it in transformers and save_pretrained a bf16 copy)")


class Tuner(TunerCheckpoints):
    """One run: the model, what trains in the current stage, the optimizer and the log."""

    def __init__(self, options: TuneOptions, on_log=None, bar: ProgressBar | None = None, on_note=None):
        from ..models import model_identity
        from ..models.loader import load_model
        from ..models.shared_routers import expand_to_groups, router_groups

        check_options(options)
        refuse_quantized(options.model)
        self.options, self.on_log, self.bar = options, on_log, bar  # bar: advanced per optimizer step
        self.dist = Distributed()
        self.out = Path(options.output)
        self.checkpoint_dir = self.out / "checkpoint"
        if options.resume and not (self.checkpoint_dir / "trainer_state.json").exists():
            raise UsageError(f"--resume: no checkpoint in {self.checkpoint_dir}")
        if options.resume and options.force:
            raise UsageError("--resume continues OUTPUT and --force starts it over: give one of them")
        # the inputs, for the rule of -o (never an input, an ancestor or a descendant of one)
        self.inputs = [p for p in (options.model, options.data, options.experts, options.general, *options.eval)
                       if p not in (None, "-")]
        if not options.resume:
            check_output(self.out, inputs=self.inputs, force=options.force, directory=True)
        self.dist.barrier()  # every process has checked OUTPUT before the first one changes it
        self.run_id = uuid.uuid4().hex  # tune.json and the checkpoint name the run they belong to
        loaded = load_model(options.model, dtype=options.dtype, device=str(self.dist.device), train=True)
        self.model, self.tokenizer, self.adapter = loaded
        self.identity = model_identity(self.model, self.adapter, options.model)
        self.chosen = None
        if options.experts and options.mode in ("experts", "lora-experts"):
            from ..select import read_experts

            self.chosen = read_experts(options.experts, model=self.identity)
            if not len(self.chosen):
                raise UsageError(f"{options.experts}: no expert selected: nothing to tune")
            # a composed expert of a router shared by several layers (MONET moe_groups) is one routing
            # choice: its parameters train in every layer of the group
            self.router_groups = [g for g in router_groups(self.model, self.adapter) if len(g) > 1]
            self.chosen.experts, note = expand_to_groups(self.chosen.experts, self.router_groups, "tuning")
            if note and on_note is not None:
                on_note(note)
        self.train_set = load_examples(options.data, self.tokenizer, options.seq_len, text_field=options.text_field,
                                       domain_field=options.domain_field)
        self.eval_sets = {Path(p).stem: load_examples(p, self.tokenizer, options.seq_len,
                                                      text_field=options.text_field,
                                                      domain_field=options.domain_field) for p in options.eval}
        self.general_set = (load_examples(options.general, self.tokenizer, options.seq_len,
                                          text_field=options.text_field, domain_field=options.domain_field)
                            if options.general else None)
        self.plan = stage_plan(options)
        self.total_steps = sum(steps for _, steps in self.plan)
        self.changed: set[str] = set()       # whole parameters trained in an earlier stage
        self.peft = None
        self.module = None
        self.stage_index = -1
        self.cdas_log: list[dict] = []
        self.warned_left_out = False

    # -- stages --------------------------------------------------------------------------------------
    def stage_of(self, step: int) -> int:
        boundary = 0
        for index, (_, steps) in enumerate(self.plan):
            boundary += steps
            if step < boundary:
                return index
        return len(self.plan) - 1

    def stage_start(self, index: int) -> int:
        return sum(steps for _, steps in self.plan[:index])

    def enter_stage(self, index: int, chosen_layers: dict | None = None) -> None:
        """Freeze everything, then make this stage's parameters trainable; new optimizer and schedule."""
        options = self.options
        kind, steps = self.plan[index]
        if self.module is not None:  # leaving a stage: what trained whole is recorded as changed
            self.module.slices.sync()
            self.module.slices.detach_hooks()
            self.changed |= {n for n, p in self.model.named_parameters() if p.requires_grad}
        _freeze(self.model)
        slices = None
        if kind == "full":
            for parameter in self.model.parameters():
                parameter.requires_grad_(True)
        elif kind == "attention-router":
            wanted = set(attention_router_names(self.model, self.adapter))
            for name, parameter in self.model.named_parameters():
                parameter.requires_grad_(name in wanted)
        elif kind in ("experts", "lora-experts"):
            chosen = chosen_layers if chosen_layers is not None else dict(self.chosen.items())
            if chosen_layers is not None:   # DAS stage 2: layers of one router chose alike; keep them whole
                from ..models.shared_routers import expand_to_groups, router_groups

                chosen, _ = expand_to_groups(chosen, router_groups(self.model, self.adapter), "tuning")
            found = expert_slices(self.model, self.adapter, chosen)
            rank = options.lora_rank if kind == "lora-experts" else None
            slices = SliceTrainer(found, lora_rank=rank, lora_alpha=options.lora_alpha).attach().bind_gradients()
            if kind == "experts" and self.chosen is not None and chosen_layers is None:
                extra = set(extra_expert_mode_names(self.model, self.adapter, self.chosen.shared_experts,
                                                    self.chosen.non_expert_modules))
                for name, parameter in self.model.named_parameters():
                    if name in extra:
                        parameter.requires_grad_(True)
        elif kind == "lora":
            self.peft = make_peft(self.model, self.adapter, options.lora_rank, options.lora_alpha)
        routers_train = kind in ("full", "attention-router")
        target = self.peft if self.peft is not None else self.model
        self.module = TuneModule(target, slices)
        self.module.train()
        if not routers_train:
            _freeze_batchnorm(self.model)
        if options.fsdp:  # before the optimizer: fully_shard replaces the parameters with DTensor shards
            shard(self.model, self.dist)
        self.trainable = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        self.optimizer = adamw(self.trainable, lr=options.lr, weight_decay=options.weight_decay)
        warmup = options.warmup if options.warmup is not None else max(1, steps // 20)
        self.schedule = schedule(lr=options.lr, min_lr=options.min_lr, warmup=min(warmup, steps), steps=steps)
        # whole-parameter stages may hold parameters without a gradient (a router bias used only
        # to choose, e.g. ERNIE's moe_statics); slices and LoRA are always in the graph
        self.wrapped = data_parallel(self.module, self.dist, fsdp=options.fsdp,
                                     find_unused_parameters=kind in ("full", "attention-router"))
        self.stage_index = index

    # -- DAS (das-two-stage) -------------------------------------------------------------------------
    def das(self) -> tuple:
        rows = self.options.das_rows
        domain = das_lib.routing_sums(self.model, self.adapter, self.train_set, max_rows=rows)
        general = das_lib.routing_sums(self.model, self.adapter, self.general_set, max_rows=rows)
        return das_lib.domain_advantage(domain, general), domain

    def choose_by_das(self) -> dict[int, list[int]]:
        from ..select import ExpertSet, write_experts

        scores, _ = self.das()
        layers = [layer.index for layer in self.adapter.moe_layers()]
        top = das_lib.top_experts(scores, self.options.top)
        chosen = {layer: ids for layer, ids in zip(layers, top)}
        if self.dist.main:
            write_experts(self.out / "experts.json", ExpertSet(
                experts=chosen, model=self.identity,
                provenance={"criterion": {"by": "das", "top": self.options.top, "domain": str(self.options.data),
                                          "general": str(self.options.general), "after": "stage 1"},
                            "tool": {"name": "moe-tune", "args": {"mode": "das-two-stage"}},
                            "scores": {str(layer): {str(i): float(scores[p, i]) for i in ids}
                                       for p, (layer, ids) in enumerate(zip(layers, top))}}))
        return chosen

    # -- loss and eval -------------------------------------------------------------------------------
    def autocast(self):
        """bf16 autocast on a GPU that has it, as monet-train does; nothing on CPU."""
        return autocast(self.dist.device)

    def _loss(self, module, batch, label_total: int, share: float):
        ids, labels, mask = (t.to(self.dist.device) for t in batch)
        if self.options.fsdp:  # buffers (BatchNorm routing statistics) are rank 0's, as DDP broadcasts them
            sharding.broadcast_buffers(self.model)
        with self.autocast():
            outputs = module(input_ids=ids, attention_mask=mask, use_cache=False)
        logits = outputs.logits[:, :-1]
        summed = F.cross_entropy(logits.flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE,
                                 reduction="sum")
        loss = summed / max(1, label_total) * self.dist.world
        aux = getattr(outputs, "aux_loss", None)
        if aux is not None and getattr(self.model.config, "router_aux_loss_coef", None):
            loss = loss + self.model.config.router_aux_loss_coef * aux * share * self.dist.world
        return loss, float(summed.detach())

    def evaluate(self) -> dict:
        """Mean token loss (nats) per eval file and per domain (pooled over files), and overall
        (:mod:`moetools.training.loss`: assistant tokens of chats, every token but the first of text)."""
        module = self.module
        was = module.training
        module.eval()
        by_file, by_domain = DomainLosses(), DomainLosses()
        limit = self.options.eval_batches * self.options.batch_size
        left_out: set[str] = set()
        seen: set[str] = set()
        for name, examples in self.eval_sets.items():
            chosen, missed = eval_rows(examples.domains, limit)  # every domain in turn, up to the limit
            left_out |= set(missed)
            seen |= set(examples.domains)
            for start in range(0, len(chosen), self.options.batch_size):
                part = examples.rows(chosen[start:start + self.options.batch_size])
                ids, labels, mask = (t.to(self.dist.device) for t in (part.input_ids, part.labels,
                                                                       part.attention_mask))
                rows = sequence_losses(module, ids, *shifted(ids, labels, IGNORE), attention_mask=mask,
                                       autocast=self.autocast)
                for domain, (loss_sum, tokens) in zip(part.domains, rows):
                    by_domain.add(domain, loss_sum, tokens)
                    by_file.add(name, loss_sum, tokens)
        module.train(was)
        if self.stage_kind not in ("full", "attention-router"):
            _freeze_batchnorm(self.model)
        means = by_domain.means()
        missing = sorted((left_out | seen) - set(means))
        if missing and not self.warned_left_out:
            self.warned_left_out = True
            log_warning(f"evaluation leaves out {len(missing)} of {len(seen)} domain(s) of the eval files "
                        f"({', '.join(missing)}): raise --eval-batches (now {self.options.eval_batches}) to cover them")
        return {"eval_loss": by_file.overall(), "eval_loss_by_file": by_file.means(sort=False),
                "eval_loss_by_domain": means, "eval_domains_left_out": missing}

    @property
    def stage_kind(self) -> str:
        return self.plan[self.stage_index][0]

    # -- the loop ------------------------------------------------------------------------------------
    def _prepare_output(self) -> bool:
        """Make OUTPUT (rank 0; formats/README.md, "Outputs"); return whether this run created it."""
        options = self.options
        created = not self.out.exists()
        self.dist.barrier()  # every rank has looked before rank 0 makes it
        if self.dist.main:
            prepare_training_directory(self.out, inputs=self.inputs, force=options.force, resume=options.resume,
                                       complete_file="tune.json", tool="moe-tune")
            if options.resume:  # the adapter of an earlier finish no longer describes what the checkpoint holds
                (self.out / "tune.json").unlink(missing_ok=True)
        self.dist.barrier()
        return created

    def _step(self, step: int) -> tuple[float, float, torch.Tensor]:
        """One optimizer step's forward and backward passes over --grad-accum micro-batches of this rank's
        rows; (loss of the global batch, gradient norm before clipping, the batch's rows)."""
        options, dist = self.options, self.dist
        rows = block_indices(step, options.batch_size, len(self.train_set), options.seed)
        label_total = self.train_set.label_tokens(rows)
        mine = rows[dist.rank::dist.world]
        micro = options.batch_size // dist.world // options.grad_accum
        # the selected experts' gradient buffers (SliceTrainer.bind_gradients) stay allocated from step to
        # step, zeroed in place (0 + g is g exactly); other modes free their gradients
        self.optimizer.zero_grad(set_to_none=not self.module.slices.binds_gradients)
        summed = 0.0
        for start in range(0, len(mine), micro):
            part = self.train_set.rows(mine[start:start + micro])
            loss, part_sum = self._loss(self.wrapped, (part.input_ids, part.labels, part.attention_mask),
                                        label_total, len(part) / options.batch_size)
            loss.backward()
            summed += part_sum
        grad_norm = clip_gradients([p for _, p in self.trainable], options.grad_clip, fsdp=options.fsdp)
        return dist.mean(summed) * dist.world / max(1, label_total), grad_norm, rows

    def run(self) -> dict:
        options, dist = self.options, self.dist
        created = self._prepare_output()
        torch.manual_seed(options.seed)
        state = {"step": 0, "tokens": 0, "elapsed_s": 0.0}
        keep_bytes = None
        if options.resume:
            saved = self.load_checkpoint()
            state = {k: saved[k] for k in ("step", "tokens", "elapsed_s")}
            keep_bytes = saved["log_bytes"]
        else:
            self.enter_stage(0)
        training_log = TrainingLog(self.out / LOG_NAME, main=dist.main, on_log=self.on_log, keep_bytes=keep_bytes)
        log = training_log.write
        if self.bar is not None:
            self.bar.advance(state["step"])  # steps done before a resume
        if options.mode == "das-two-stage" and not options.resume:
            self._log_cdas(0, log)
        started = time.monotonic() - state["elapsed_s"]
        stop_rule = StopRule(max_minutes=options.max_minutes, stop_at_step=options.stop_at_step)
        last_eval = None
        while state["step"] < self.total_steps:
            step = state["step"]
            if self.stage_of(step) != self.stage_index:  # stage 1 -> 2: choose experts by DAS first
                chosen = self.choose_by_das()
                self.enter_stage(self.stage_of(step), chosen)
            self.schedule.step = step - self.stage_start(self.stage_index)
            lr = self.schedule.apply(self.optimizer)
            train_loss, grad_norm, rows = self._step(step)
            if not (math.isfinite(train_loss) and math.isfinite(grad_norm)):
                training_log.close()
                if dist.main:
                    (self.out / "tune.json").unlink(missing_ok=True)  # an older run's adapter is not this one
                stop_if_not_finite(step + 1, {"loss": train_loss, "grad_norm": grad_norm}, self.out,
                                   created=created and not options.resume, main=dist.main, what="adapter")
            self.optimizer.step()
            state["step"] = step + 1
            state["tokens"] += int(self.train_set.attention_mask[rows].sum())
            state["elapsed_s"] = time.monotonic() - started
            log({"type": "train", "step": state["step"], "stage": self.stage_index + 1, "loss": train_loss, "lr": lr,
                 "grad_norm": grad_norm, "tokens": state["tokens"], "elapsed_s": round(state["elapsed_s"], 3)})
            if self.bar is not None:
                self.bar.advance()
            done = state["step"] >= self.total_steps
            stop = stop_rule.should_stop(state["step"], dist)
            if state["step"] % options.eval_every == 0 or done or stop:
                if self.eval_sets:
                    last_eval = self.evaluate()
                    log({"type": "eval", "step": state["step"], "stage": self.stage_index + 1, **last_eval})
                if options.mode == "das-two-stage" and self.stage_index == 0:
                    self._log_cdas(state["step"], log)
            if (state["step"] % options.checkpoint_every == 0 and not done) or (stop and not done):
                self.save_checkpoint(state, training_log.size())
            if stop:
                break
        training_log.close()
        self.module.slices.sync()
        finished = state["step"] >= self.total_steps
        summary = {"steps": state["step"], "steps_planned": self.total_steps, "finished": finished,
                   "tokens": state["tokens"], "elapsed_s": round(state["elapsed_s"], 3), "world_size": dist.world,
                   "last_eval": last_eval, "trainable_parameters": self.trainable_count(), "cdas": self.cdas_log}
        full_state = sharding.full_model_state(self.model) if finished and options.fsdp else None  # a collective
        if finished and dist.main:
            from .adapter import save_adapter

            save_adapter(self, summary, model_state=full_state)
            finish_training_directory(self.out)
        dist.barrier()
        return summary

    def trainable_count(self) -> int:
        """Parameters that train (FSDP: of the whole model, not this rank's shards)."""
        return sum(p.numel() for _, p in self.trainable)

    def _log_cdas(self, step: int, log) -> None:
        scores, _ = self.das()
        record = {"step": step, "k": self.options.top, "cdas": das_lib.cumulative_das(scores, self.options.top)}
        self.cdas_log.append(record)
        log({"type": "cdas", **record})

    def close(self) -> None:
        if self.options.fsdp:
            # drop FSDP's modules, optimizer and autograd graph (which hold gloo work objects) while the
            # interpreter is alive, as monet-train does: left to exit, their teardown can abort a rank
            import gc

            self.module = self.wrapped = self.optimizer = self.model = self.peft = None
            self.trainable = []
            gc.collect()
        self.dist.close()


def tune(options: TuneOptions, on_log=None, progress: ProgressFactory = no_progress, on_note=None) -> dict:
    """Run moe-tune per ``options``; write ``OUTPUT/`` (adapter, log, checkpoint); return a summary.

    ``progress(description, total)`` (moetools.progress) is advanced per optimizer step; ``on_note(text)``
    gets one-line notes (e.g. that a shared router's expert trains in every layer of its group).
    """
    tuner = Tuner(options, on_log=on_log, on_note=on_note)
    try:
        with progress("optimizer steps", total=tuner.total_steps) as bar:
            tuner.bar = bar
            return tuner.run()
    finally:
        tuner.close()


__all__ = ["LOG_NAME", "TuneModule", "TuneOptions", "Tuner", "tune"]
