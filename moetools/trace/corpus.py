"""Corpus input for moe-trace: shards, windows, length-sorted batches.

Documents come from the one corpus reader, :func:`moetools.corpus.documents.read_documents`
(JSON lines or plain text), with the ``skip`` bad-line policy: unusable lines (invalid
UTF-8, invalid JSON, no text field, empty text) are reported through ``on_skip``, counted
in the end record, and the rest of the corpus is traced.

Everything here streams: memory is bounded by one sort buffer of windows,
whatever the corpus length.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..corpus.documents import Document, read_documents
from ..errors import UsageError


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


def windows_of(document: Document, token_ids, max_length: int) -> Iterator[Window]:
    """Consecutive non-overlapping windows of at most ``max_length`` tokens."""
    token_ids = np.asarray(token_ids, dtype=np.int32)
    for number, start in enumerate(range(0, len(token_ids), max_length)):
        yield Window(document.doc_id, number, start, document.meta, token_ids[start:start + max_length])


def windows_of_pieces(document: Document, pieces: Iterable[np.ndarray], max_length: int) -> Iterator[Window]:
    """:func:`windows_of` for a document whose token ids arrive in pieces (a long document tokenised by
    :func:`moetools.corpus.tokenize.token_pieces`): the same windows, each yielded once its tokens are
    in, so memory holds one piece and one window, not the document's ids."""
    pending = np.empty(0, dtype=np.int32)
    number = offset = 0
    for piece in pieces:
        pending = np.concatenate([pending, np.asarray(piece, dtype=np.int32)])
        while len(pending) >= max_length:
            yield Window(document.doc_id, number, offset, document.meta, pending[:max_length].copy())
            pending = pending[max_length:]
            number, offset = number + 1, offset + max_length
    if len(pending):
        yield Window(document.doc_id, number, offset, document.meta, pending.copy())


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


__all__ = ["Document", "Window", "batches", "in_shard", "parse_shard", "read_documents", "windows_of",
           "windows_of_pieces"]
