"""Corpus input for moe-trace: documents, shards, windows, length-sorted batches.

Input is JSON lines (``{"text": ..., "id": ..., other fields...}``; other fields
become the record's ``meta``) or plain text (one document per line), decided by
the first non-blank line. Lines that cannot be used (invalid UTF-8, invalid
JSON, no text field, empty text) are skipped and reported through ``on_skip``;
the rest of the corpus is traced.

Everything here streams: memory is bounded by one sort buffer of windows,
whatever the corpus length.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from ..errors import UsageError


@dataclass
class Document:
    index: int  # 0-based index among the corpus's usable documents (before sharding)
    line: int  # 1-based line number in the corpus
    doc_id: str
    text: str
    meta: dict = field(default_factory=dict)


@dataclass
class Window:
    doc_id: str
    window: int  # index of this window within its document
    offset: int  # token offset of the first token within the document
    meta: dict
    token_ids: np.ndarray  # (T,) int32: 4 bytes a token in the sort buffer, not a Python int each


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"3/64"`` -> (3, 64); None -> None."""
    if text in (None, ""):
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like i/n (e.g. 3/64), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {text}: need 0 <= i < n")
    return index, count


def in_shard(document: Document, shard: tuple[int, int] | None, by: str = "index") -> bool:
    """Deterministic slice: document index mod n, or sha256 of the document id mod n."""
    if shard is None:
        return True
    index, count = shard
    if by == "hash":
        key = int.from_bytes(hashlib.sha256(document.doc_id.encode("utf-8")).digest()[:8], "big")
    else:
        key = document.index
    return key % count == index


def read_documents(source: BinaryIO, *, name: str, text_field: str = "text", id_field: str = "id",
                   on_skip: Callable[[int, str], None] | None = None) -> Iterator[Document]:
    """Documents of a JSON-lines or plain-text corpus; unusable lines go to ``on_skip(line, reason)``."""
    skip = on_skip or (lambda line, reason: None)
    mode = None
    index = 0
    for line_number, raw in enumerate(source, start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as error:
            skip(line_number, f"invalid UTF-8 at byte {error.start}")
            continue
        if not line.strip():
            continue
        if mode is None:
            mode = "jsonl" if line.lstrip().startswith("{") else "text"
        if mode == "text":
            document = Document(index, line_number, f"{name}:{line_number}", line)
        else:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as error:
                skip(line_number, f"not valid JSON ({error.msg})")
                continue
            if not isinstance(obj, dict):
                skip(line_number, "not a JSON object")
                continue
            text = obj.pop(text_field, None)
            if not isinstance(text, str):
                skip(line_number, f"no string field {text_field!r}")
                continue
            if not text.strip():
                skip(line_number, f"empty {text_field!r}")
                continue
            doc_id = obj.pop(id_field, None)
            doc_id = f"{name}:{line_number}" if doc_id is None else str(doc_id)
            document = Document(index, line_number, doc_id, text, obj)
        index += 1
        yield document


def windows_of(document: Document, token_ids, max_length: int) -> Iterator[Window]:
    """Consecutive non-overlapping windows of at most ``max_length`` tokens."""
    token_ids = np.asarray(token_ids, dtype=np.int32)
    for number, start in enumerate(range(0, len(token_ids), max_length)):
        yield Window(document.doc_id, number, start, document.meta, token_ids[start:start + max_length])


def batches(windows: Iterable[Window], *, batch_tokens: int | None, batch_size: int | None,
            sort_buffer: int) -> Iterator[list[Window]]:
    """Batches of windows, sorted by length inside each buffer of ``sort_buffer`` windows.

    A batch holds at most ``batch_size`` windows, or (default) at most
    ``batch_tokens`` padded tokens (windows × longest window). The order is a
    function of the input and these options only, which ``--resume`` relies on.
    """
    def flush(buffer: list[Window]) -> Iterator[list[Window]]:
        buffer.sort(key=lambda w: len(w.token_ids), reverse=True)  # stable: ties keep input order
        batch: list[Window] = []
        for window in buffer:
            longest = len(batch[0].token_ids) if batch else len(window.token_ids)
            full = (len(batch) >= batch_size) if batch_size else (batch and longest * (len(batch) + 1) > batch_tokens)
            if full:
                yield batch
                batch = []
            batch.append(window)
        if batch:
            yield batch

    buffer: list[Window] = []
    for window in windows:
        buffer.append(window)
        if len(buffer) >= sort_buffer:
            yield from flush(buffer)
            buffer = []
    if buffer:
        yield from flush(buffer)
