"""lm-evaluation-harness's ``loglikelihood_rolling`` definition of a document's log-likelihood, and its word
and byte counts, reproduced token for token so that moe-eval's numbers compare with published ones.

lm-eval (``HFLM.loglikelihood_rolling``, ``lm_eval.utils.get_rolling_token_windows`` with
``context_len=1`` and ``make_disjoint_window``): the document is tokenised as ``HFLM.tok_encode`` does
(the tokenizer's own special tokens, none when the text already starts with the prefix token's text),
the prefix token (the tokenizer's BOS, else its EOS: "end of text") is put before it, and every token
of the document is scored. A document longer than the context ``L`` is scored in windows: the first
reads ``[prefix] + tokens[:L-1]`` and scores ``tokens[:L]``; each later one scores the next (up to)
``L`` tokens, reading the ``L`` tokens before its last one. Word and byte counts are lm-eval's
``Task.count_words`` (``len(re.split(r"\\s+", text))``) and ``Task.count_bytes`` (UTF-8 bytes).
"""

from __future__ import annotations

import re


def prefix_token_id(tokenizer) -> int | None:
    """lm-eval's ``HFLM.prefix_token_id``: the tokenizer's BOS id, else its EOS id (None: neither)."""
    if tokenizer.bos_token_id is not None:
        return tokenizer.bos_token_id
    return tokenizer.eos_token_id


def encode_document(tokenizer, text: str, prefix_id: int) -> list[int]:
    """``HFLM.tok_encode(text)``: the tokenizer's special tokens, unless ``text`` starts with the prefix's text."""
    if text.startswith(tokenizer.decode(prefix_id)):
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(text)


def rolling_windows(ids: list[int], prefix_id: int, max_length: int) -> list[tuple[list[int], int]]:
    """(sequence, scored) pairs: the model reads ``sequence[:-1]``, the last ``scored`` of its predictions of
    ``sequence[1:]`` are summed. Together they score every token of ``ids`` exactly once."""
    if not ids:
        return []
    first = min(max_length, len(ids))
    windows = [([prefix_id] + ids[:first], first)]
    predicted = first
    while predicted < len(ids):
        count = min(len(ids) - predicted, max_length)
        end = predicted + count
        windows.append((ids[end - max_length - 1:end], count))
        predicted += count
    return windows


def count_words(text: str) -> int:
    """lm-eval's ``Task.count_words`` (white-space separated pieces, empty ends included)."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    """lm-eval's ``Task.count_bytes``: UTF-8 bytes."""
    return len(text.encode("utf-8"))


__all__ = ["count_bytes", "count_words", "encode_document", "prefix_token_id", "rolling_windows"]
