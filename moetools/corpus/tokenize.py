"""Tokenising a document of any length in pieces: memory bounded by a piece, not by the document.

A fast tokenizer given one 50 MB string builds its encoding (ids, offsets, words, masks)
for the whole string at once: ~160 bytes a character, 7.9 GB for 50 MB. A document longer
than :data:`LONG_DOCUMENT_CHARS` is therefore cut into pieces of about :data:`PIECE_CHARS`
characters and tokenised piece by piece (special tokens once, around the whole):

    for ids in token_pieces(document.text, tokenizer):   # (n,) int32 arrays, in order
        ...

Pieces are cut just before a white-space character that is followed by a non-white-space
one (``"foo  | bar"``), the place where pre-tokenizers that split on white space (byte-level
BPE as GPT-2's, word-level, BERT's) start a new word anyway, so the ids equal those of the
whole document. A tokenizer whose normaliser adds a prefix to every string it is given (older
SentencePiece set-ups: ``Prepend("▁")``) gets one more such prefix per piece, and a piece
with no white space at all in its last half is cut hard; both only in documents longer than
:data:`LONG_DOCUMENT_CHARS`. Shorter documents are tokenised whole, as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

#: documents up to this many characters are tokenised in one call (their ids never change)
LONG_DOCUMENT_CHARS = 1 << 18
#: characters per piece of a longer document (~10 MB of tokenizer memory a piece)
PIECE_CHARS = 1 << 16
_CUT = re.compile(r"\s(?=\S)")


def text_pieces(text: str, piece_chars: int = PIECE_CHARS) -> Iterator[str]:
    """Consecutive pieces of ``text`` of at most ~``piece_chars`` characters, joined they give ``text``."""
    start, length = 0, len(text)
    while length - start > piece_chars:
        target = start + piece_chars
        cut = None
        for match in _CUT.finditer(text, start + piece_chars // 2, target + 1):
            cut = match.start()
        if cut is None or cut <= start:
            cut = target  # no white space to cut at: a hard cut
        yield text[start:cut]
        start = cut
    if start < length:
        yield text[start:]


def special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer adds before and after a text with ``add_special_tokens=True`` (BOS, EOS...)."""
    probe = "a b"
    with_special = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    core = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    if not core:
        return with_special, []
    for start in range(len(with_special) - len(core) + 1):
        if with_special[start:start + len(core)] == core:
            return with_special[:start], with_special[start + len(core):]
    return [], []


def token_pieces(text: str, tokenizer, *, add_special_tokens: bool = True,
                 long_chars: int = LONG_DOCUMENT_CHARS, piece_chars: int = PIECE_CHARS) -> Iterator[np.ndarray]:
    """The token ids of ``text`` as a sequence of (n,) int32 arrays (one for a short text)."""
    if len(text) <= long_chars:
        yield np.asarray(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"], dtype=np.int32)
        return
    prefix, suffix = special_tokens_around(tokenizer) if add_special_tokens else ([], [])
    if prefix:
        yield np.asarray(prefix, dtype=np.int32)
    for piece in text_pieces(text, piece_chars):
        yield np.asarray(tokenizer(piece, add_special_tokens=False)["input_ids"], dtype=np.int32)
    if suffix:
        yield np.asarray(suffix, dtype=np.int32)


__all__ = ["LONG_DOCUMENT_CHARS", "PIECE_CHARS", "special_tokens_around", "text_pieces", "token_pieces"]
