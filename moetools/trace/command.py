"""What ``moe-trace`` does between parsing its options and exiting: files, resume, header and end."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

from ..cli.common import open_input, open_output, partial_path, progress, say, tool_info, warn
from ..errors import FormatError, TruncatedStreamError, UsageError
from ..models import model_identity
from ..streams import StreamWriter
from .corpus import parse_shard, read_documents
from .runner import (
    DEFAULT_MAX_LENGTH,
    TraceOptions,
    TraceSummary,
    check_resumable,
    complete_records,
    header_extra,
    load_model,
    resume_source,
    trace_corpus,
)

#: zstd level of trace streams. On trace records (8-bit gates/contributions, random routing; 175 bytes
#: a token raw) level 1, the streams default, stores 3.70 bytes per token·layer·selected expert, level
#: 3 3.19, level 5 3.03, level 6 3.01, level 7 2.98, level 9 2.97. Level 7 compresses ~50 MB/s on one
#: core here (level 5: ~80 MB/s), i.e. ~300k tokens/s: 100x what the CPU forward traces, and more
#: than one GPU traces of any but tiny models.
TRACE_ZSTD_LEVEL = 7


@contextlib.contextmanager
def trace_writer(output, fmt, uncompressed, identity, extra):
    """``open_stream_writer`` with the trace's zstd level; the partial output is kept on failure (--resume)."""
    with open_output(output, binary_ok_on_tty=(fmt == "jsonl"), keep_partial=True) as handle:
        writer = StreamWriter(handle, "trace", tool=tool_info(), model=identity, encoding=fmt,
                              compress=not uncompressed, level=TRACE_ZSTD_LEVEL, header_extra=extra)
        try:
            yield writer
        except BaseException:
            writer.abandon()
            raise
        writer.close(**getattr(writer, "end_extra", {}))


def finished_output(output, identity: dict, extra: dict) -> bool:
    """True when ``output`` is a complete trace of this model and these options and nothing is partial.

    A requeued SLURM task whose shard finished then exits at once instead of redoing it.
    """
    partial = partial_path(output)
    if not Path(output).is_file() or partial.exists() or partial.with_name(partial.name + ".resume").exists():
        return False
    from ..streams import StreamReader

    with open(output, "rb") as handle:
        try:
            reader = StreamReader(handle, kinds="trace")
            check_resumable(reader.header, identity, extra)
            for _ in reader:
                pass
        except (TruncatedStreamError, FormatError):
            return False
    return True


def cli_run(model_path, corpus, *, output, fmt, uncompressed, text_field="text", id_field="id", max_length=None,
            batch_tokens=None, batch_size=None, sort_buffer=1024, dtype="auto", device="cpu", device_map=None,
            logit_lens=0, precision=8, shard=None, shard_by="index", resume=False) -> TraceSummary:
    if resume and output in (None, "-"):
        raise UsageError("--resume needs an output file (-o FILE): a pipe cannot be resumed")
    options = TraceOptions(max_length=max_length or DEFAULT_MAX_LENGTH, batch_tokens=batch_tokens, batch_size=batch_size,
                           sort_buffer=sort_buffer, logit_lens=logit_lens, precision=precision,
                           shard=parse_shard(shard), shard_by=shard_by)
    corpus_name = "-" if corpus in (None, "-") else Path(corpus).name
    source = open_input(corpus)  # before the model loads: a missing corpus fails fast
    model, tokenizer, adapter = load_model(model_path, dtype=dtype, device=device, device_map=device_map)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and max_length is None:
        options.max_length = min(DEFAULT_MAX_LENGTH, limit)
    elif limit and max_length > limit:
        raise UsageError(f"--max-length {max_length} exceeds the model's context of {limit} tokens")
    identity = model_identity(model, adapter, path=model_path)
    extra = header_extra(adapter, options, corpus=corpus_name, text_field=text_field, id_field=id_field,
                         experts_implementation=adapter.traced_experts_implementation())

    summary = TraceSummary()
    if resume and finished_output(output, identity, extra):
        say(f"{output} is complete already (--resume): nothing to do")
        return summary

    def on_skip(line, reason):
        summary.skip(line, reason)
        warn(f"{corpus_name}:{line}: skipped: {reason}")

    documents = read_documents(source, name=corpus_name, text_field=text_field, id_field=id_field, on_skip=on_skip)
    first = next(documents, None)
    if first is None:  # before any output exists
        raise UsageError(f"{corpus_name}: no usable documents in the corpus"
                         + (f" ({summary.skipped_count} lines skipped)" if summary.skipped_count else ""))
    documents = itertools.chain([first], documents)

    previous = resume_source(partial_path(output)) if resume else None
    kept_header, kept = complete_records(previous) if previous is not None else (None, iter(()))
    if kept_header is not None:
        check_resumable(kept_header, identity, extra)
    with trace_writer(output, fmt, uncompressed, identity, extra) as writer:
        last = None
        for record in kept:  # the complete records of the killed run, copied once, streamed
            writer.write(record)
            last = (record["doc_id"], int(record["window"]))
        if writer.count:
            say(f"resuming after {writer.count} complete records of {previous.name}")
        with progress("tracing tokens") as bar:
            trace_corpus(model, tokenizer, adapter, documents, writer, options, skip_windows=writer.count,
                         expect_last=last, summary=summary, on_batch=lambda windows, tokens: bar.advance(tokens))
        if options.shard and summary.documents_traced == 0:
            warn(f"shard {shard} holds none of the {summary.documents} documents")
        writer.end_extra = {"documents": summary.documents_traced, "windows": summary.windows,
                            "tokens": summary.tokens, "skipped_lines": summary.skipped_count,
                            "skipped": summary.skipped}
    if previous is not None:
        with contextlib.suppress(FileNotFoundError):
            previous.unlink()
    say(f"traced {summary.windows} windows ({summary.tokens} tokens) of {summary.documents_traced} documents"
        + (f"; skipped {summary.skipped_count} lines" if summary.skipped_count else ""))
    return summary
