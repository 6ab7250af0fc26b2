"""The monet-train loop: AdamW, warmup + cosine, clipping, bf16 autocast on GPU, eval per domain,
JSON-lines log, checkpoints and exact resume, DDP or FSDP through torchrun.

Data parallelism: run under ``torchrun --nproc_per_node N``; ``--batch-size`` is the *global*
batch, each rank takes rows ``rank::N`` of it, gradients are averaged (DDP), so the loss curve
matches one process with the same global batch (MONET's BatchNorm routing statistics are per
rank, the only source of difference). Only rank 0 writes.

With ``fsdp=True`` (``--fsdp``, torchrun with 2 or more processes) the model is sharded with
FSDP2 ``fully_shard`` instead of wrapped in DDP (:mod:`.sharding`): same batch split, same
averaged gradients, clipping on the global norm, same optimizer, same logs, and the same
checkpoint and output files (full state dicts gathered on rank 0).
"""

from __future__ import annotations

import gc
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import UsageError
from . import data as data_lib
from . import sharding
from .models import build_model, parameter_counts, resolve_model_config
from .state import WarmupCosine, load_checkpoint, save_checkpoint, tied_parameter_names

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
    fsdp: bool = False  # shard with FSDP2 instead of DDP (torchrun, 2+ processes)


class _Distributed:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
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

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return float(tensor.item()) / self.world

    def any(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(tensor)
        return bool(tensor.item() > 0)


def _prepare_tokenizer(options: TrainOptions, out: Path, documents, dist: _Distributed):
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


@torch.no_grad()
def evaluate(model, eval_blocks: dict[str, torch.Tensor], batch_size: int, max_batches: int, device, autocast):
    """Mean next-token cross-entropy (nats) per domain and over all domains, model in eval mode."""
    was_training = model.training
    model.eval()
    losses, total, count = {}, 0.0, 0
    for domain, blocks in eval_blocks.items():
        domain_total, domain_count = 0.0, 0
        for start in range(0, min(len(blocks), batch_size * max_batches), batch_size):
            ids = blocks[start:start + batch_size].to(device)
            with autocast():
                logits = model(input_ids=ids, use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(),
                                                     reduction="sum")
            domain_total += float(loss)
            domain_count += ids[:, 1:].numel()
        if domain_count:
            losses[domain] = domain_total / domain_count
            total, count = total + domain_total, count + domain_count
    model.train(was_training)
    return losses, (total / count if count else float("nan"))


def train(options: TrainOptions, on_log=None, progress=None) -> dict:
    """Train per ``options``; return the metadata written to ``OUT/training_metadata.json``.

    ``on_log(record)`` sees every JSON-lines log record; ``progress`` (optional) has
    ``advance(n)`` and ``update(**fields)`` (a rich progress bar in the CLI).
    """
    if options.steps < 1 or options.batch_size < 1 or options.seq_len < 2:
        raise UsageError("--steps and --batch-size must be at least 1 and --seq-len at least 2")
    if options.fsdp and int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise UsageError("--fsdp shards the model over torchrun processes: run under torchrun with "
                         "--nproc_per_node 2 or more (WORLD_SIZE is 1 here)")
    dist = _Distributed()
    if options.batch_size % dist.world:
        raise UsageError(f"--batch-size {options.batch_size} is not divisible by the {dist.world} processes")
    out = Path(options.output)
    checkpoint_dir = out / "checkpoint"
    if options.resume and not (checkpoint_dir / "trainer_state.json").exists():
        raise UsageError(f"--resume: no checkpoint in {checkpoint_dir}")
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    torch.manual_seed(options.seed)
    documents = data_lib.read_documents(options.data, options.text_field, options.domain_field)
    train_docs, eval_docs = data_lib.split_documents(documents, options.eval_fraction)
    tokenizer = _prepare_tokenizer(options, out, train_docs, dist)
    train_blocks = data_lib.pack(train_docs, tokenizer, options.seq_len)
    if train_blocks.shape[0] == 0:
        raise UsageError(f"the training text is shorter than one block of --seq-len {options.seq_len} tokens")
    eval_blocks = data_lib.pack_by_domain(eval_docs, tokenizer, options.seq_len) if eval_docs else {}

    special = {"eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    config_kwargs = resolve_model_config(options.arch, options.model_settings, len(tokenizer), special)
    if config_kwargs.get("max_position_embeddings", 0) < options.seq_len:
        config_kwargs["max_position_embeddings"] = options.seq_len
    torch.manual_seed(options.seed)
    model = build_model(options.arch, config_kwargs).to(dist.device)
    counts = parameter_counts(model, options.arch)
    tied = tied_parameter_names(model)
    if options.fsdp:  # before the optimizer: fully_shard replaces the parameters with DTensor shards
        sharding.shard_model(model, dist.device, dist.world)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": options.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=options.lr, betas=(0.9, 0.95))
    warmup = options.warmup if options.warmup is not None else max(1, options.steps // 20)
    schedule = WarmupCosine(options.lr, warmup, options.steps, options.min_lr)
    log_path = out / LOG_NAME
    state = {"step": 0, "tokens": 0, "elapsed_s": 0.0}
    if options.resume:
        saved = load_checkpoint(checkpoint_dir, model, optimizer, sharded=options.fsdp, tied=tied)
        schedule.load_state_dict(saved["schedule"])
        state = {k: saved[k] for k in ("step", "tokens", "elapsed_s")}
        if dist.main and log_path.exists():  # drop log lines written after the checkpoint
            with open(log_path, "r+", encoding="utf-8") as handle:
                handle.truncate(saved["log_bytes"])
    elif dist.main and log_path.exists():
        log_path.unlink()

    wrapped = model
    if dist.world > 1 and not options.fsdp:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[dist.device] if dist.device.type == "cuda" else None,
                                          find_unused_parameters=options.arch == "moe")
    use_bf16 = dist.device.type == "cuda" and torch.cuda.is_bf16_supported()

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16) if dist.device.type == "cuda" \
            else torch.autocast("cpu", enabled=False)

    log_handle = open(log_path, "a", encoding="utf-8") if dist.main else None  # noqa: SIM115 (closed below)

    def log(record: dict):
        if log_handle is not None:
            log_handle.write(json.dumps(record) + "\n")
            log_handle.flush()
        if on_log is not None and dist.main:
            on_log(record)

    def checkpoint():
        gathered = {}
        if options.fsdp:  # collectives: every rank takes part, rank 0 gets the full tensors
            gathered = {"model_state": sharding.full_model_state(model),
                        "optimizer_state": sharding.full_optimizer_state(model, optimizer), "tied": tied}
        if dist.main:
            log_handle.flush()
            save_checkpoint(checkpoint_dir, model, optimizer, **gathered, trainer_state=
                            {**state, "schedule": schedule.state_dict(), "log_bytes": log_path.stat().st_size,
                             # informational: the order itself is block_indices(step, batch, blocks, seed)
                             "data_position": {"samples_seen": state["step"] * options.batch_size,
                                               "epoch": state["step"] * options.batch_size // len(train_blocks),
                                               "train_blocks": len(train_blocks), "seed": options.seed},
                             "arch": options.arch, "options": asdict(options)})
        dist.barrier()

    per_rank = options.batch_size // dist.world
    started = time.monotonic() - state["elapsed_s"]
    run_started = time.monotonic()
    last_eval = None
    if progress is not None:
        progress.update(total=options.steps, completed=state["step"])
    wrapped.train()
    while state["step"] < options.steps:
        step = state["step"]
        rows = data_lib.block_indices(step, options.batch_size, len(train_blocks), options.seed)
        ids = train_blocks[rows[dist.rank::dist.world]].to(dist.device)      # (B / world, T)
        schedule.step = step
        lr = schedule.apply(optimizer)
        if options.fsdp:  # buffers (BatchNorm routing statistics) are rank 0's, as DDP broadcasts them
            sharding.broadcast_buffers(model)
        with autocast():
            outputs = wrapped(input_ids=ids, labels=ids, use_cache=False)
        optimizer.zero_grad(set_to_none=True)
        outputs.loss.backward()
        if options.fsdp:
            grad_norm = sharding.clip_grad_norm(model.parameters(), options.grad_clip)
        else:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip))
        optimizer.step()
        state["step"] = step + 1
        state["tokens"] += options.batch_size * options.seq_len
        state["elapsed_s"] = time.monotonic() - started
        parts = {k: dist.mean(v) for k, v in _loss_parts(outputs).items()}
        log({"type": "train", "step": state["step"], **parts, "lr": lr, "grad_norm": grad_norm,
             "tokens": state["tokens"], "elapsed_s": round(state["elapsed_s"], 3)})
        if progress is not None:
            progress.update(advance=1, description=f"loss {parts['loss']:.3f}")
        done = state["step"] >= options.steps
        out_of_time = options.max_minutes is not None and (time.monotonic() - run_started) > options.max_minutes * 60
        stop = dist.any(out_of_time) or (options.stop_at_step is not None and state["step"] >= options.stop_at_step)
        if eval_blocks and (state["step"] % options.eval_every == 0 or done or stop):
            per_domain, overall = evaluate(model, eval_blocks, per_rank, options.eval_batches, dist.device, autocast)
            last_eval = {"eval_loss": overall, "eval_loss_by_domain": per_domain}
            log({"type": "eval", "step": state["step"], **last_eval})
        if (state["step"] % options.checkpoint_every == 0 and not done) or (stop and not done):
            checkpoint()
        if stop:
            break
    if log_handle is not None:
        log_handle.close()

    metadata = {"arch": options.arch, "steps": state["step"], "steps_planned": options.steps,
                "finished": state["step"] >= options.steps, "tokens": state["tokens"],
                "elapsed_s": round(state["elapsed_s"], 3), "world_size": dist.world,
                "parallel": "fsdp" if options.fsdp else ("ddp" if dist.world > 1 else "none"),
                "device": str(dist.device),
                "bf16_autocast": use_bf16, "parameters": counts, "model_config": config_kwargs,
                "train_blocks": int(train_blocks.shape[0]), "eval_domains": sorted(eval_blocks),
                "unigram_entropy_bits": data_lib.unigram_entropy_bits(train_blocks, len(tokenizer)),
                "last_eval": last_eval, "options": asdict(options)}
    full_state = sharding.full_model_state(model) if options.fsdp else None  # a collective
    if dist.main:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress is on stderr already
        _unwrap(wrapped).save_pretrained(out, state_dict=full_state)
        (out / METADATA_NAME).write_text(json.dumps(metadata, indent=1))
    dist.barrier()
    if options.fsdp:
        # drop FSDP's modules, optimizer and autograd graph (which hold gloo work objects) while the
        # interpreter is alive: left to interpreter exit, their teardown aborts a rank now and then
        # ("terminate called without an active exception", SIGABRT)
        del wrapped, model, optimizer, outputs
        gc.collect()
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    return metadata


__all__ = ["LOG_NAME", "METADATA_NAME", "TrainOptions", "evaluate", "train"]
