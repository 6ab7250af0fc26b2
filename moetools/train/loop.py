"""The monet-train loop: AdamW, warmup + cosine, clipping, gradient accumulation, bf16 autocast on GPU,
eval per domain, JSON-lines log, checkpoints and exact resume, DDP or FSDP through torchrun. The parts
moe-tune shares (process group, DDP/FSDP, autocast, optimizer, stop rules, log, checkpoint files, the
per-domain loss) are :mod:`moetools.training`.

Data parallelism: run under ``torchrun --nproc_per_node N``; ``--batch-size`` is the *global*
batch, each rank takes rows ``rank::N`` of it, gradients are averaged (DDP), so the loss curve
matches one process with the same global batch (MONET's BatchNorm routing statistics are per
rank, the only source of difference). Only rank 0 writes.

With ``fsdp=True`` (``--fsdp``, torchrun with 2 or more processes) the model is sharded with
FSDP2 ``fully_shard`` instead of wrapped in DDP (:mod:`.sharding`): same batch split, same
averaged gradients, clipping on the global norm, same optimizer, same logs, and the same
checkpoint and output files (full state dicts gathered on rank 0).

With ``grad_accum=N`` (``--grad-accum``) each process's rows are run as N micro-batches, each loss
divided by N before its backward: the gradient of the step is that of the whole batch (every block
has ``seq_len`` tokens, so the micro-batch means average to the batch mean). MONET's BatchNorm routing
statistics, and the MoE baseline's load-balancing loss, are per micro-batch.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import UsageError
from ..streams import strict_json
from ..streams.outputs import check_output, finish_training_directory, prepare_training_directory
from ..training import sharding
from ..training.checkpoint import load_checkpoint, save_checkpoint, stop_if_not_finite, tied_parameter_names
from ..training.distributed import (
    Distributed,
    autocast,
    bf16_autocast_enabled,
    clip_gradients,
    data_parallel,
    shard,
)
from ..training.log import TrainingLog
from ..training.loss import DomainLosses, sequence_losses, shifted
from ..training.optimizer import adamw, schedule
from ..training.options import check_loop_options
from ..training.stopping import StopRule
from . import data as data_lib
from .models import build_model, parameter_counts, resolve_model_config

LOG_NAME = "train_log.jsonl"
METADATA_NAME = "training_metadata.json"


@dataclass
class TrainOptions:
    data: str
    output: str
    arch: str = "monet-vd"
    model_settings: dict = field(default_factory=dict)  # config keys: --config file, then flags
    text_field: str = "text"
    domain_field: str = "domain"
    tokenizer: str | None = None
    vocab_size: int = 4096
    steps: int = 1000
    batch_size: int = 8          # global, in sequences
    grad_accum: int = 1          # micro-batches per optimizer step
    seq_len: int = 256
    lr: float = 5e-4             # paper B.1
    min_lr: float = 0.0
    warmup: int | None = None    # default: 5% of steps
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 100
    eval_batches: int = 8
    eval_fraction: float = 0.05
    checkpoint_every: int = 200
    max_minutes: float | None = None
    stop_at_step: int | None = None  # stop (after checkpointing) once this step is done
    resume: bool = False
    force: bool = False  # start over in an existing OUTPUT this suite wrote (moved to OUTPUT.old until done)
    fsdp: bool = False  # shard with FSDP2 instead of DDP (torchrun, 2+ processes)


def _prepare_tokenizer(options: TrainOptions, out: Path, documents, dist: Distributed):
    saved = out / "tokenizer.json"
    if options.resume and saved.exists():
        return data_lib.load_tokenizer(out)
    if dist.main:
        tokenizer = (data_lib.load_tokenizer(options.tokenizer) if options.tokenizer
                     else data_lib.train_tokenizer(documents, options.vocab_size))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.save_pretrained(out)
    dist.barrier()
    return data_lib.load_tokenizer(out)


def _unwrap(model):
    """The plain module under DDP / torch.compile wrappers (what gets saved)."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _loss_parts(outputs) -> dict:
    parts = {"loss": float(outputs.loss.detach())}
    for name in ("lm_loss", "aux_loss"):
        value = getattr(outputs, name, None)
        if value is not None:
            parts[name] = float(value.detach())
    return parts


def evaluate(model, eval_blocks: dict[str, torch.Tensor], batch_size: int, max_batches: int, device, autocast):
    """Mean next-token cross-entropy (nats) per domain and over all domains, model in eval mode
    (:mod:`moetools.training.loss`: every token but each block's first scored)."""
    was_training = model.training
    model.eval()
    losses = DomainLosses()
    for domain, blocks in eval_blocks.items():
        for start in range(0, min(len(blocks), batch_size * max_batches), batch_size):
            ids = blocks[start:start + batch_size].to(device)
            for loss_sum, tokens in sequence_losses(model, ids, *shifted(ids), autocast=autocast):
                losses.add(domain, loss_sum, tokens)
    model.train(was_training)
    return losses.means(), losses.overall()


def _check_options(options: TrainOptions) -> None:
    """Usage errors that need no process group."""
    check_loop_options(options, more_floats=("eval_fraction",))


def _prepare_output(options: TrainOptions, dist: Distributed) -> Path:
    """The output directory (made by rank 0); with ``--resume`` it must hold a checkpoint."""
    out = Path(options.output)
    if options.resume and not (out / "checkpoint" / "trainer_state.json").exists():
        raise UsageError(f"--resume: no checkpoint in {out / 'checkpoint'}")
    if options.resume and options.force:
        raise UsageError("--resume continues OUTPUT and --force starts it over: give one of them")
    inputs = [p for p in (options.data, options.tokenizer) if p not in (None, "-")]
    if not options.resume:  # never an input; an existing OUTPUT only with --force (formats/README.md, "Outputs")
        check_output(out, inputs=inputs, force=options.force, directory=True)
    dist.barrier()  # every process has checked OUTPUT before the first one changes it
    if dist.main:
        prepare_training_directory(out, inputs=inputs, force=options.force, resume=options.resume,
                                   complete_file=METADATA_NAME, tool="monet-train")
    dist.barrier()
    return out


@dataclass
class _Data:
    tokenizer: object
    train_blocks: torch.Tensor  # (blocks, seq_len) int64
    eval_blocks: dict  # domain -> (blocks, seq_len) int64


def _load_data(options: TrainOptions, documents: list, out: Path, dist: Distributed) -> _Data:
    """Documents -> train/eval split -> tokenizer (trained or given, saved in ``out``) -> packed blocks."""
    train_docs, eval_docs = data_lib.split_documents(documents, options.eval_fraction)
    tokenizer = _prepare_tokenizer(options, out, train_docs, dist)
    train_blocks = data_lib.pack(train_docs, tokenizer, options.seq_len)
    if train_blocks.shape[0] == 0:
        raise UsageError(f"the training text is shorter than one block of --seq-len {options.seq_len} tokens")
    eval_blocks = (data_lib.pack_by_domain(eval_docs, tokenizer, options.seq_len, options.domain_field)
                   if eval_docs else {})
    return _Data(tokenizer, train_blocks, eval_blocks)


def _build_model(options: TrainOptions, tokenizer, dist: Distributed):
    """(model on the device, its config keys), initialised from ``options.seed``."""
    special = {"eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    config_kwargs = resolve_model_config(options.arch, options.model_settings, len(tokenizer), special)
    if config_kwargs.get("max_position_embeddings", 0) < options.seq_len:
        config_kwargs["max_position_embeddings"] = options.seq_len
    torch.manual_seed(options.seed)
    return build_model(options.arch, config_kwargs).to(dist.device), config_kwargs


class _Run:
    """One training run's model, optimizer, schedule, counters and log: what the steps of
    :func:`train` share. Built in the order that fixes the random state (model initialised
    from the seed, then optimizer, then the checkpoint restored over both)."""

    def __init__(self, options: TrainOptions, dist: Distributed, out: Path, data: _Data, on_log,
                 created: bool = False):
        self.options, self.dist, self.out, self.data, self.on_log = options, dist, out, data, on_log
        self.created = created  # this run made ``out`` (removed again if training diverges before a checkpoint)
        self.checkpoint_dir = out / "checkpoint"
        self.log_path = out / LOG_NAME
        self.model, self.config_kwargs = _build_model(options, data.tokenizer, dist)
        self.counts = parameter_counts(self.model, options.arch)
        self.tied = tied_parameter_names(self.model)
        if options.fsdp:  # before the optimizer: fully_shard replaces the parameters with DTensor shards
            shard(self.model, dist)
        self.optimizer = adamw(self.model.named_parameters(), lr=options.lr, weight_decay=options.weight_decay)
        self.schedule = schedule(lr=options.lr, min_lr=options.min_lr, warmup=options.warmup, steps=options.steps)
        self.state = {"step": 0, "tokens": 0, "elapsed_s": 0.0}
        keep_bytes = self._restore()
        self.wrapped = data_parallel(self.model, dist, fsdp=options.fsdp, find_unused_parameters=options.arch == "moe")
        self.use_bf16 = bf16_autocast_enabled(dist.device)
        self.training_log = TrainingLog(self.log_path, main=dist.main, on_log=on_log, keep_bytes=keep_bytes)
        self.last_eval = None

    def _restore(self) -> int | None:
        """--resume: model, optimizer, schedule and counters from the checkpoint; return the log's length
        then (what the log is cut back to). None without --resume (a fresh log)."""
        if not self.options.resume:
            return None
        saved = load_checkpoint(self.checkpoint_dir, self.model, self.optimizer, sharded=self.options.fsdp,
                                tied=self.tied)
        self.schedule.load_state_dict(saved["schedule"])
        self.state = {k: saved[k] for k in ("step", "tokens", "elapsed_s")}
        return saved["log_bytes"]

    def autocast(self):
        return autocast(self.dist.device)

    def log(self, record: dict) -> None:
        self.training_log.write(record)

    def batch(self) -> torch.Tensor:
        """This rank's rows of the global batch of the current step, (B / world, T) on the device."""
        options, dist = self.options, self.dist
        rows = data_lib.block_indices(self.state["step"], options.batch_size, len(self.data.train_blocks),
                                      options.seed)
        return self.data.train_blocks[rows[dist.rank::dist.world]].to(dist.device)

    def set_learning_rate(self) -> float:
        self.schedule.step = self.state["step"]
        return self.schedule.apply(self.optimizer)

    def forward_backward_update(self, ids: torch.Tensor) -> tuple[dict, float]:
        """One optimizer step on ``ids`` in --grad-accum micro-batches; (loss parts averaged over micro-batches
        and ranks, gradient norm before clipping)."""
        accum = self.options.grad_accum
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for micro in ids.chunk(accum):
            if self.options.fsdp:  # buffers (BatchNorm routing statistics) are rank 0's, as DDP broadcasts them
                sharding.broadcast_buffers(self.model)
            with self.autocast():
                outputs = self.wrapped(input_ids=micro, labels=micro, use_cache=False)
            (outputs.loss / accum if accum > 1 else outputs.loss).backward()
            for name, value in _loss_parts(outputs).items():
                sums[name] = sums.get(name, 0.0) + value
        grad_norm = clip_gradients(self.model.parameters(), self.options.grad_clip, fsdp=self.options.fsdp)
        parts = {k: self.dist.mean(v / accum if accum > 1 else v) for k, v in sums.items()}
        if not all(math.isfinite(v) for v in (*parts.values(), grad_norm)):
            self.close_log()
            stop_if_not_finite(self.state["step"] + 1, {**parts, "grad_norm": grad_norm}, self.out,
                               created=self.created, main=self.dist.main, what="model")
        self.optimizer.step()
        return parts, grad_norm

    def count_step(self, started: float) -> None:
        self.state["step"] += 1
        self.state["tokens"] += self.options.batch_size * self.options.seq_len
        self.state["elapsed_s"] = time.monotonic() - started

    def evaluate(self) -> None:
        per_domain, overall = evaluate(self.model, self.data.eval_blocks, self.options.batch_size // self.dist.world,
                                       self.options.eval_batches, self.dist.device, self.autocast)
        self.last_eval = {"eval_loss": overall, "eval_loss_by_domain": per_domain}
        self.log({"type": "eval", "step": self.state["step"], **self.last_eval})

    def checkpoint(self) -> None:
        """Model, optimizer, schedule, counters and log length to OUT/checkpoint (rank 0 writes)."""
        options, state = self.options, self.state
        gathered = {}
        if options.fsdp:  # collectives: every rank takes part, rank 0 gets the full tensors
            gathered = {"model_state": sharding.full_model_state(self.model),
                        "optimizer_state": sharding.full_optimizer_state(self.model, self.optimizer),
                        "tied": self.tied}
        log_bytes = self.training_log.size()
        if self.dist.main:
            train_blocks = len(self.data.train_blocks)
            save_checkpoint(self.checkpoint_dir, self.model, self.optimizer, **gathered, trainer_state=
                            {**state, "schedule": self.schedule.state_dict(),
                             "log_bytes": log_bytes,
                             # informational: the order itself is block_indices(step, batch, blocks, seed)
                             "data_position": {"samples_seen": state["step"] * options.batch_size,
                                               "epoch": state["step"] * options.batch_size // train_blocks,
                                               "train_blocks": train_blocks, "seed": options.seed},
                             "arch": options.arch, "options": asdict(options)})
        self.dist.barrier()

    def close_log(self) -> None:
        self.training_log.close()

    def metadata(self) -> dict:
        options, state, dist, data = self.options, self.state, self.dist, self.data
        return {"arch": options.arch, "steps": state["step"], "steps_planned": options.steps,
                "finished": state["step"] >= options.steps, "tokens": state["tokens"],
                "elapsed_s": round(state["elapsed_s"], 3), "world_size": dist.world,
                "parallel": "fsdp" if options.fsdp else ("ddp" if dist.world > 1 else "none"),
                "device": str(dist.device),
                "bf16_autocast": self.use_bf16, "parameters": self.counts, "model_config": self.config_kwargs,
                "train_blocks": int(data.train_blocks.shape[0]), "eval_domains": sorted(data.eval_blocks),
                "unigram_entropy_bits": data_lib.unigram_entropy_bits(data.train_blocks, len(data.tokenizer)),
                "last_eval": self.last_eval, "options": asdict(options)}

    def save(self, metadata: dict) -> None:
        """The transformers directory (config, weights) and the metadata file, written by rank 0."""
        full_state = sharding.full_model_state(self.model) if self.options.fsdp else None  # a collective
        if self.dist.main:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # our own progress is on stderr already
            model = _unwrap(self.wrapped)
            model.save_pretrained(self.out, state_dict=full_state)
            if model.config.model_type == "monet":  # its code and auto_map: loads where moetools is not installed
                from ..models.monet.shipped import add_to_directory

                add_to_directory(self.out)
            (self.out / METADATA_NAME).write_text(strict_json.dumps(metadata, indent=1))
        self.dist.barrier()


def train(options: TrainOptions, on_log=None, progress=None) -> dict:
    """Train per ``options``; return the metadata written to ``OUT/training_metadata.json``.

    ``on_log(record)`` sees every JSON-lines log record; ``progress`` (optional) has
    ``advance(n)`` and ``update(**fields)`` (a rich progress bar in the CLI).
    """
    _check_options(options)
    dist = Distributed()
    # the corpus is read before the output directory exists: bad input leaves no empty directory behind
    documents = data_lib.read_training_documents(options.data, options.text_field)
    created = not Path(options.output).exists() and not options.resume
    dist.barrier()  # every rank has looked before rank 0 makes it
    out = _prepare_output(options, dist)
    torch.manual_seed(options.seed)
    data = _load_data(options, documents, out, dist)
    run = _Run(options, dist, out, data, on_log, created=created)

    started = time.monotonic() - run.state["elapsed_s"]
    stop_rule = StopRule(max_minutes=options.max_minutes, stop_at_step=options.stop_at_step)
    if progress is not None:
        progress.update(total=options.steps, completed=run.state["step"])
    run.wrapped.train()
    while run.state["step"] < options.steps:
        ids = run.batch()                                                 # (B / world, T)
        lr = run.set_learning_rate()
        parts, grad_norm = run.forward_backward_update(ids)
        run.count_step(started)
        run.log({"type": "train", "step": run.state["step"], **parts, "lr": lr, "grad_norm": grad_norm,
                 "tokens": run.state["tokens"], "elapsed_s": round(run.state["elapsed_s"], 3)})
        if progress is not None:
            progress.update(advance=1, description=f"loss {parts['loss']:.3f}")
        step = run.state["step"]
        done = step >= options.steps
        stop = stop_rule.should_stop(step, dist)
        if data.eval_blocks and (step % options.eval_every == 0 or done or stop):
            run.evaluate()
        if (step % options.checkpoint_every == 0 and not done) or (stop and not done):
            run.checkpoint()
        if stop:
            break
    run.close_log()

    metadata = run.metadata()
    run.save(metadata)
    if dist.main:
        finish_training_directory(out)
    if options.fsdp:
        # drop FSDP's modules, optimizer and autograd graph (which hold gloo work objects) while the
        # interpreter is alive: left to interpreter exit, their teardown aborts a rank now and then
        # ("terminate called without an active exception", SIGABRT)
        del run
        gc.collect()
    dist.close()
    return metadata


__all__ = ["LOG_NAME", "METADATA_NAME", "TrainOptions", "evaluate", "train"]
