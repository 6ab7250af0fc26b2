"""moe-trace as a library: load a model, read a corpus, write a ``trace`` stream.

    options = TraceOptions(max_length=512, logit_lens=3)
    model, tokenizer, adapter = moetools.models.load_model("path/to/olmoe", dtype="auto", device="cpu")
    summary = trace_corpus(model, tokenizer, adapter, documents, writer, options)

:mod:`moetools.trace.run` (what ``moe-trace`` calls) adds the output file
handling, ``--resume`` and the header/end records. Memory stays flat in corpus length: documents are
read one at a time, windows sorted inside a bounded buffer, records streamed out.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..corpus.tokenize import token_pieces
from ..errors import FormatError, TruncatedStreamError, UsageError
from ..models.identity import model_identity
from .corpus import batches, in_shard, windows_of_pieces
from .records import PieceTable, batch_records

MAX_SKIPPED_REPORTED = 100
DEFAULT_MAX_LENGTH = 512
#: --batch-tokens when not given. On CPU a batch's transient tensors (the MoE layers' N·K × d
#: buffers) live in the process heap: at 8192 padded tokens they are ~400 MB, and how glibc places
#: them drifts from batch to batch, so the peak RSS crept up with corpus length (1.18x from 20k to
#: 1M tokens); at 2048 it is flat and a CPU forward is no slower (bench/bench_trace.py). GPU memory
#: comes from torch's caching allocator, where bigger batches pay off.
DEFAULT_BATCH_TOKENS_CPU = 2048
DEFAULT_BATCH_TOKENS_ACCELERATOR = 8192


@dataclass
class TraceOptions:
    max_length: int = 512
    batch_tokens: int | None = None  # None: default_batch_tokens(model)
    batch_size: int | None = None
    sort_buffer: int = 1024
    logit_lens: int = 0
    precision: int = 8  # significant bits of gates/contributions on disk: 8, 11 (float16) or 24 (float32)
    shard: tuple[int, int] | None = None
    shard_by: str = "index"
    flush_seconds: float = 30.0
    top_k: int | None = None  # --top-k: experts per token the routers select instead of the model's own k


@dataclass
class TraceSummary:
    documents: int = 0  # usable documents read (all shards)
    documents_traced: int = 0
    windows: int = 0
    tokens: int = 0
    tokens_read: int = 0  # tokens of the windows read so far, traced or still in the sort buffer (progress)
    skipped: list = field(default_factory=list)
    skipped_count: int = 0

    def skip(self, line: int, reason: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < MAX_SKIPPED_REPORTED:
            self.skipped.append({"line": line, "reason": reason})


def input_device(model) -> torch.device:
    return model.get_input_embeddings().weight.device


def iter_windows(documents, tokenizer, options: TraceOptions, summary: TraceSummary):
    for document in documents:
        summary.documents += 1
        if not in_shard(document, options.shard, options.shard_by):
            continue
        # tokenised in pieces when long (moetools.corpus.tokenize): memory bounded by a piece and a
        # window, not by the document (a 50 MB line took 7.9 GB whole; bench/bench_long_document.py)
        windows = windows_of_pieces(document, token_pieces(document.text, tokenizer), options.max_length)
        first = next(windows, None)
        if first is None:
            summary.skip(document.line, "no tokens")
            continue
        summary.documents_traced += 1
        summary.tokens_read += len(first.token_ids)
        yield first
        for window in windows:
            summary.tokens_read += len(window.token_ids)
            yield window


def default_batch_tokens(model) -> int:
    """Padded tokens per batch when ``--batch-tokens`` is not given: 2048 on CPU, 8192 on an accelerator."""
    if input_device(model).type == "cpu":
        return DEFAULT_BATCH_TOKENS_CPU
    return DEFAULT_BATCH_TOKENS_ACCELERATOR


def pad_batch(batch, seq_len: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask (B, seq_len) int64, right-padded."""
    ids = np.full((len(batch), seq_len), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), seq_len), dtype=np.int64)
    for row, window in enumerate(batch):
        ids[row, :len(window.token_ids)] = window.token_ids
        mask[row, :len(window.token_ids)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _forward(model, input_ids, attention_mask):
    try:  # the logits are not needed: project only the last position
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
    except TypeError:
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)


def trace_corpus(model, tokenizer, adapter, documents, writer, options: TraceOptions, *,
                 skip_windows: int = 0, expect_last: tuple | None = None, summary: TraceSummary | None = None,
                 on_batch=None) -> TraceSummary:
    """Trace ``documents`` into ``writer``; the first ``skip_windows`` windows are not run (``--resume``)."""
    summary = summary or TraceSummary()
    check_options(adapter, options)
    layers = adapter.moe_layers()
    num_experts = layers[0].num_experts
    pieces = PieceTable(tokenizer)
    device = input_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    last_flush = time.monotonic()
    window_stream = iter_windows(documents, tokenizer, options, summary)
    with adapter.capture(logit_lens=options.logit_lens) as capture, torch.inference_mode():
        batch_tokens = options.batch_tokens or default_batch_tokens(model)
        for batch in batches(window_stream, batch_tokens=batch_tokens, batch_size=options.batch_size,
                             sort_buffer=options.sort_buffer):
            if skip_windows >= len(batch):
                skip_windows -= len(batch)
                if skip_windows == 0 and expect_last is not None:
                    _check_resume_point(batch[-1], expect_last)
                summary.windows += len(batch)
                summary.tokens += sum(len(w.token_ids) for w in batch)
                continue
            first = 0  # records of this batch already in the output (a run killed inside the batch)
            if skip_windows:
                if expect_last is not None:
                    _check_resume_point(batch[skip_windows - 1], expect_last)
                first, skip_windows = skip_windows, 0
            # the whole batch runs even when resuming inside it: the same shapes give the same
            # floating-point rounding, so the resumed records equal an uninterrupted run's bit for bit
            seq_len = max(len(w.token_ids) for w in batch)
            input_ids, attention_mask = pad_batch(batch, seq_len, pad_id)
            attention_mask = attention_mask.to(device)
            _forward(model, input_ids.to(device), attention_mask)
            captured = capture.take(attention_mask)
            records = batch_records(batch, captured, seq_len=seq_len, num_experts=num_experts, pieces=pieces,
                                    precision=options.precision)
            del captured, input_ids, attention_mask
            for record in records[first:]:
                writer.write(record)
            del records
            summary.windows += len(batch)
            summary.tokens += sum(len(w.token_ids) for w in batch)
            tokens = sum(len(w.token_ids) for w in batch[first:])
            if time.monotonic() - last_flush > options.flush_seconds:
                writer.flush()  # a killed run then loses at most this many seconds of work
                last_flush = time.monotonic()
            if on_batch is not None:
                on_batch(len(batch), tokens)
    if skip_windows:
        raise UsageError(f"--resume: the partial output holds {skip_windows} more records than this corpus and "
                         "these options produce; it was written from another input")
    return summary


def _check_resume_point(window, expected: tuple) -> None:
    if (window.doc_id, window.window) != tuple(expected):
        raise UsageError(f"--resume: the partial output's last record is {expected[0]!r} window {expected[1]}, "
                         f"but this corpus and options put {window.doc_id!r} window {window.window} there; "
                         "resume with the same corpus and options, or start afresh without --resume")


def check_options(adapter, options: TraceOptions) -> None:
    """UsageError for options this model cannot run (before any output exists)."""
    if options.logit_lens:
        vocabulary = adapter.vocab_size()
        if options.logit_lens > vocabulary:
            raise UsageError(f"--logit-lens {options.logit_lens} exceeds the model's vocabulary of {vocabulary} tokens")


def reduced_precision_padding(model, options: TraceOptions) -> bool:
    """True when windows of different lengths may share a padded batch and the model computes in 16 bits.

    Padding changes the shapes, hence the bf16/fp16 rounding, of every matrix product (in plain
    transformers too), so gates differ from a one-window-per-batch run: in bf16 up to 1.1e-2
    relative on an OLMoE-shaped model, 99.9% within 5.7e-3, and 0.06% of selected experts flip at
    near-ties (bench/results/bf16_batching.json); in float32 below 1e-6 and none flip.
    """
    dtype = getattr(model, "dtype", None)
    return options.batch_size != 1 and str(dtype) in ("torch.bfloat16", "torch.float16")


def header_extra(adapter, options: TraceOptions, *, corpus: str, text_field: str, id_field: str,
                 experts_implementation: str | None) -> dict:
    """The trace header's fields after the model identity (formats/trace.md); checks the options first."""
    check_options(adapter, options)
    layers = adapter.moe_layers()
    return {
        "layers": [layer.index for layer in layers],
        "num_experts": layers[0].num_experts,
        "top_k": layers[0].top_k,
        "top_k_override": options.top_k,
        "routing": adapter.routing_rule().as_dict(),
        "experts_implementation": experts_implementation,
        "max_length": options.max_length,
        "text_field": text_field,
        "id_field": id_field,
        "corpus": corpus,
        "shard": None if options.shard is None else f"{options.shard[0]}/{options.shard[1]}",
        "shard_by": options.shard_by,
        "logit_lens": options.logit_lens,
        "precision": options.precision,
        "order": {"sort_buffer": options.sort_buffer,
                  "batch_tokens": options.batch_tokens or default_batch_tokens(adapter.model),
                  "batch_size": options.batch_size},
        "reduced_precision_padding": reduced_precision_padding(adapter.model, options),
    }


# -- resume -----------------------------------------------------------------------------------

def complete_records(path: Path):
    """(header, records) of the complete records at the start of a partial stream, as a generator pair.

    The partial stream has no end record (the reader reports it truncated): we
    keep every record read before the :class:`TruncatedStreamError`, and before a
    damaged tail (a corrupt last frame: :class:`FormatError`) too. The reader hands
    on a zstd frame's records only once its checksum is verified, so every record
    kept is intact; the damaged frame's records are traced again.
    """
    from ..streams import StreamReader
    from ..streams.files import open_input

    handle = open_input(path)  # closed by the records generator
    try:
        reader = StreamReader(handle, kinds="trace")
    except (TruncatedStreamError, FormatError):
        handle.close()
        return None, iter(())

    def records():
        try:
            yield from reader
        except FormatError:  # TruncatedStreamError included
            return
        finally:
            handle.close()

    return reader.header, records()


def count_complete(path: Path) -> int:
    header, records = complete_records(path)
    return sum(1 for _ in records) if header is not None else -1


def resume_source(partial: Path) -> Path | None:
    """Move the partial output aside for resuming; returns where it now is (None: nothing to resume).

    A resume that was itself killed leaves ``NAME.partial.resume`` (the older
    copy) beside a new ``NAME.partial``: the one with more complete records wins.
    """
    aside = partial.with_name(partial.name + ".resume")
    candidates = [p for p in (aside, partial) if p.exists()]
    if not candidates:
        return None
    best = max(candidates, key=count_complete)
    if best != aside:
        os.replace(best, aside)
    elif partial.exists():
        partial.unlink()
    return aside


def clear_resume_state(partial: Path) -> None:
    """Remove ``NAME.partial`` and ``NAME.partial.resume`` once ``NAME`` is complete: stale resume state
    (e.g. of a resume refused for other options) never outlives a finished output."""
    for stale in (partial, partial.with_name(partial.name + ".resume")):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def check_resumable(header: dict, identity: dict, extra: dict) -> None:
    if (header.get("model") or {}).get("fingerprint") != identity["fingerprint"]:
        raise UsageError("--resume: the partial output was written with another model")
    for key in ("corpus", "max_length", "shard", "shard_by", "text_field", "id_field", "logit_lens", "order",
                "precision", "top_k", "top_k_override"):
        if header.get(key) != extra.get(key):
            raise UsageError(f"--resume: the partial output was written with {key}={header.get(key)!r}, "
                             f"this run has {extra.get(key)!r}; use the same options")


__all__ = [
    "TraceOptions",
    "TraceSummary",
    "asdict",
    "check_options",
    "check_resumable",
    "complete_records",
    "default_batch_tokens",
    "header_extra",
    "model_identity",
    "reduced_precision_padding",
    "resume_source",
    "trace_corpus",
]
