"""What ``moe-trace`` does between parsing its options and exiting: files, resume, header and end.

    from moetools.trace.run import run_trace
    run_trace("models/olmoe", "corpus.jsonl", output="trace.msgpack.zst", resume=True, log=print, warn=print)

Usable from Python without the CLI (no click): the caller passes what to do with
messages (``log``, ``warn``), a progress-bar factory (``progress``) and the header's
``tool`` field (:mod:`moetools.progress`); ``moetools.cli.trace`` passes its own.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from .. import __version__
from ..errors import FormatError, TruncatedStreamError, UsageError
from ..models import model_identity
from ..models.loader import load_model
from ..progress import BytesRead, Log, ProgressFactory, log_info, log_warning, no_progress
from ..streams.files import is_stdio, open_input, open_stream_writer, partial_path
from .corpus import parse_shard, read_documents
from .runner import (
    DEFAULT_MAX_LENGTH,
    TraceOptions,
    TraceSummary,
    check_resumable,
    clear_resume_state,
    complete_records,
    header_extra,
    resume_source,
    trace_corpus,
)

#: zstd level of trace streams. On trace records (8-bit gates/contributions, random routing; 175 bytes
#: a token raw) level 1, the streams default, stores 3.70 bytes per token·layer·selected expert, level
#: 3 3.19, level 5 3.03, level 6 3.01, level 7 2.98, level 9 2.97. Level 7 compresses ~50 MB/s on one
#: core here (level 5: ~80 MB/s), i.e. ~300k tokens/s: 100x what the CPU forward traces, and more
#: than one GPU traces of any but tiny models.
TRACE_ZSTD_LEVEL = 7


def quantized_weights(model_path, model) -> dict | None:
    """The header's ``quantized_weights`` for a checkpoint with a ``quantization_config``: its method,
    whether transformers dequantized it on load (no kernels here, e.g. on a CPU) and the dtype the
    model then computed in; None for an unquantized checkpoint (the field is then absent)."""
    from ..models.checkpoint_layout import quantization_method

    method = quantization_method(model_path) if Path(model_path).is_dir() else None
    if not method:
        return None
    return {"quant_method": method, "dequantized": not getattr(model, "is_quantized", False),
            "dtype": str(getattr(model, "dtype", "")).removeprefix("torch.")}


def trace_writer(output, fmt, uncompressed, identity, extra, tool: dict | None = None):
    """The trace's stream writer: ``open_stream_writer`` at the trace's zstd level, keeping the partial
    output on failure (``--resume`` continues from it)."""
    return open_stream_writer(output, "trace", fmt, uncompressed, tool=tool, model=identity, header_extra=extra,
                              keep_partial=True, level=TRACE_ZSTD_LEVEL)


def finished_output(output, identity: dict, extra: dict) -> bool:
    """True when ``output`` is a complete trace of this model and these options and nothing is partial.

    A requeued SLURM task whose shard finished then exits at once instead of redoing it.
    """
    if not Path(output).is_file():  # finished whatever resume state lies beside it (cleared by the caller)
        return False
    from ..streams import StreamReader

    with open_input(output) as handle:
        try:
            reader = StreamReader(handle, kinds="trace")
            check_resumable(reader.header, identity, extra)
            for _ in reader:
                pass
        except (TruncatedStreamError, FormatError):
            return False
    return True


def run_trace(model_path, corpus, *, output, fmt="msgpack", uncompressed=False, text_field="text", id_field="id",
              max_length=None, batch_tokens=None, batch_size=None, sort_buffer=1024, dtype="auto", device="cpu",
              device_map=None, logit_lens=0, precision=8, shard=None, shard_by="index", resume=False, top_k=None,
              tool: dict | None = None, log: Log = log_info, warn: Log = log_warning,
              progress: ProgressFactory = no_progress) -> TraceSummary:
    """Trace ``corpus`` (a path or ``-``) through the model at ``model_path`` into ``output`` (path or ``-``).

    ``resume=True`` continues a killed run from ``OUTPUT.partial`` (or does nothing
    when ``output`` is complete already). ``tool`` is the header's ``tool`` field
    (name, version, arguments); ``log``/``warn`` take one line of text each;
    ``progress(description, total, unit)`` gives a context manager advanced after every batch: in
    bytes of the corpus file traced (total: its size, unit ``bytes``), or by tokens for a pipe. ``top_k`` makes the routers select that many experts per token
    (:meth:`moetools.models.Adapter.override_top_k`: the forward changes, not only the record); the
    header's ``top_k`` is then ``top_k`` and ``top_k_override`` says so, while ``model`` stays the
    checkpoint's identity (its own ``top_k`` and fingerprint).
    """
    if resume and is_stdio(output):
        raise UsageError("--resume needs an output file (-o FILE): a pipe cannot be resumed")
    if tool is None:
        tool = {"name": "moetools.trace", "version": __version__, "args": {}}
    options = TraceOptions(max_length=max_length or DEFAULT_MAX_LENGTH, batch_tokens=batch_tokens, batch_size=batch_size,
                           sort_buffer=sort_buffer, logit_lens=logit_lens, precision=precision,
                           shard=parse_shard(shard), shard_by=shard_by, top_k=top_k)
    corpus_name = "-" if is_stdio(corpus) else Path(corpus).name
    source = open_input(corpus)  # before the model loads: a missing corpus fails fast
    model, tokenizer, adapter = load_model(model_path, dtype=dtype, device=device, device_map=device_map)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and max_length is None:
        options.max_length = min(DEFAULT_MAX_LENGTH, limit)
    elif limit and max_length > limit:
        raise UsageError(f"--max-length {max_length} exceeds the model's context of {limit} tokens")
    identity = model_identity(model, adapter, path=model_path)  # the checkpoint's, before any --top-k
    if top_k is not None:
        adapter.override_top_k(top_k)
    extra = header_extra(adapter, options, corpus=corpus_name, text_field=text_field, id_field=id_field,
                         experts_implementation=adapter.traced_experts_implementation())
    quantized = quantized_weights(model_path, model)
    if quantized:
        extra["quantized_weights"] = quantized

    summary = TraceSummary()
    if resume and finished_output(output, identity, extra):
        clear_resume_state(partial_path(output))
        log(f"{output} is complete already (--resume): nothing to do")
        return summary

    def on_skip(line, reason):  # named in the end record; the reader's one warning counts them
        summary.skip(line, reason)

    # skipped lines and empty documents: counted in the end record; one warning counts the empty ones
    documents = read_documents(source, name=corpus_name, text_field=text_field, id_field=id_field,
                               bad_lines="skip", on_skip=on_skip, warn=warn,
                               on_empty=lambda line: summary.skip(line, f"empty {text_field!r}"))
    first = next(documents)  # refuses a corpus with nothing usable (exit 2, or 3: empty) before any output exists
    documents = itertools.chain([first], documents)

    previous = resume_source(partial_path(output)) if resume else None
    kept_header, kept = complete_records(previous) if previous is not None else (None, iter(()))
    if kept_header is not None:
        check_resumable(kept_header, identity, extra)
    with trace_writer(output, fmt, uncompressed, identity, extra, tool) as writer:
        last = None
        for record in kept:  # the complete records of the killed run, copied once, streamed
            writer.write(record)
            last = (record["doc_id"], int(record["window"]))
        if writer.count:
            log(f"resuming after {writer.count} complete records of {previous.name}")
        # a corpus file: done/total in its bytes, so that the time left is known; the bytes read count in
        # the share of their tokens traced (the rest waits in the sort buffer). A pipe: tokens traced.
        read = BytesRead(source)
        with (progress("tracing corpus", total=read.total, unit="bytes") if read.total is not None else
              progress("tracing tokens", unit="tokens")) as bar:
            def on_batch(windows: int, tokens: int) -> None:
                if read.total is None:
                    bar.advance(tokens)
                else:
                    read.catch_up(bar, done=summary.tokens / max(1, summary.tokens_read))

            trace_corpus(model, tokenizer, adapter, documents, writer, options, skip_windows=writer.count,
                         expect_last=last, summary=summary, on_batch=on_batch)
            read.catch_up(bar)
        if options.shard and summary.documents_traced == 0:
            warn(f"shard {shard} holds none of the {summary.documents} documents")
        writer.end_extra = {"documents": summary.documents_traced, "windows": summary.windows,
                            "tokens": summary.tokens, "skipped_lines": summary.skipped_count,
                            "skipped": summary.skipped}
    if not is_stdio(output):
        clear_resume_state(partial_path(output))  # the resumed-from copy, or stale state of an earlier run
    log(f"traced {summary.windows} windows ({summary.tokens} tokens) of {summary.documents_traced} documents"
        + (f"; skipped {summary.skipped_count} lines" if summary.skipped_count else ""))
    return summary


__all__ = ["TRACE_ZSTD_LEVEL", "finished_output", "run_trace", "trace_writer"]
