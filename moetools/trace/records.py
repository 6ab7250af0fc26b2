"""Turning one batch's captured routing into ``sequence`` records (formats/trace.md)."""

from __future__ import annotations

import os

import numpy as np
import torch

#: significant bits of gates and contributions on disk -> dtype (formats/trace.md, "Precision")
PRECISIONS = {8: np.dtype("<f2"), 11: np.dtype("<f2"), 24: np.dtype("<f4")}


def stored_values(values: np.ndarray, precision: int) -> np.ndarray:
    """fp32 values as written: 24 bits -> float32; 11 -> float16; 8 -> float16 rounded to 8 significant bits.

    8 bits is bfloat16's precision (relative step 2^-8 = 0.4 %): round-to-nearest-even
    on the fp32 bit pattern, then an exact cast to float16 (for normal float16
    values). Gates of a bf16 model lose nothing; the zeroed low mantissa bits let
    zstd store a value in about 1.1 bytes instead of 1.5 (bench/bench_trace.py).
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    if precision == 8:
        bits = values.view(np.uint32)
        rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
        values = np.where(np.isfinite(values), rounded.view(np.float32), values)
    return values.astype(PRECISIONS[precision])


def id_dtype(num_experts: int) -> np.dtype:
    """The smallest unsigned dtype whose all-ones value is not an expert id (formats/trace.md, ``experts``).

    All ones marks a padding slot, so it must lie outside 0..E−1: 256 experts (DeepSeek-V3, a 16²
    MONET) need ``<u2``, else expert 255 would read as padding.
    """
    if num_experts < 1 << 8:
        return np.dtype("|u1")
    if num_experts < 1 << 16:
        return np.dtype("<u2")
    return np.dtype("<u4")


#: what a decoder writes for bytes that are not (yet) a whole UTF-8 character
REPLACEMENT = "\ufffd"
#: tokens decoded together at most to complete characters split over tokens (a chain of such characters
#: longer than this keeps its one-token pieces)
MAX_SPAN = 32


class PieceTable:
    """The text of each token of a window: ``tokenizer.decode([id])`` (cached: bounded by the vocabulary) where
    that is whole characters, else the span of tokens is decoded once (:meth:`window`)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def __call__(self, token_id: int) -> str:
        piece = self._cache.get(token_id)
        if piece is None:
            piece = self._decode([token_id])
            self._cache[token_id] = piece
        return piece

    def window(self, token_ids: list[int]) -> list[str]:
        """One piece per token; joined, the pieces are the window's text. A character whose UTF-8 bytes lie in
        several tokens (byte-level BPE, byte fallback) goes whole to the token holding its last byte, the
        tokens before it get the characters they complete ('' if none): no U+FFFD where the text has none.
        Bytes the window cuts off from their character (at its ends) still read U+FFFD."""
        pieces = [self(token_id) for token_id in token_ids]
        start = 0
        while start < len(pieces):
            if REPLACEMENT not in pieces[start]:
                start += 1
                continue
            end, whole = self._whole_span(token_ids, start)
            if whole is None:
                start += 1
                continue
            pieces[start:end] = _split_span(whole, [self._decode(token_ids[start:cut]) for cut in range(start + 1, end)])
            start = end
        return pieces

    def _whole_span(self, token_ids: list[int], start: int) -> tuple[int, str | None]:
        """The shortest span from ``start`` that decodes to whole characters, and its text (None: none does)."""
        for end in range(start + 2, min(len(token_ids), start + MAX_SPAN) + 1):
            text = self._decode(token_ids[start:end])
            if REPLACEMENT not in text:
                return end, text
        return start + 1, None


def _split_span(whole: str, prefixes: list[str]) -> list[str]:
    """``whole`` cut where each prefix's decoded text stops agreeing with it (a prefix ends in U+FFFD where it
    holds part of a character): len(prefixes) + 1 pieces that join to ``whole``."""
    pieces, done = [], 0
    for prefix in prefixes:
        agreed = max(done, len(os.path.commonprefix([prefix, whole])))
        pieces.append(whole[done:agreed])
        done = agreed
    pieces.append(whole[done:])
    return pieces


def batch_records(windows, layers: list[dict], *, seq_len: int, num_experts: int, pieces: PieceTable,
                  precision: int = 8) -> list[dict]:
    """One record per window; ``layers`` from :meth:`RoutingCapture.take` over a (B, seq_len) batch."""
    ids_type = id_dtype(num_experts)
    batch = len(windows)

    def per_window(name, dtype):  # (L, N, ...) -> numpy (B, L, T_max, ...)
        stacked = torch.stack([layer[name] for layer in layers])  # (L, B·T, ...)
        stacked = stacked.reshape(len(layers), batch, seq_len, *stacked.shape[2:]).transpose(0, 1)
        return stacked.numpy().astype(dtype, copy=False) if dtype is not None else stacked

    experts = per_window("ids", ids_type)  # (B, L, T, K)
    gates = stored_values(per_window("gates", None).float().numpy(), precision)  # (B, L, T, K)
    contribution = stored_values(per_window("contribution", None).numpy(), precision)
    prob_sum = torch.stack([layer["prob_sum"] for layer in layers], dim=1).float().numpy()  # (B, L, E)
    lens = per_window("lens", None) if "lens" in layers[0] else None  # (B, L, T, K, J)

    records = []
    for b, window in enumerate(windows):
        length = len(window.token_ids)
        record = {
            "type": "sequence",
            "doc_id": window.doc_id,
            "window": window.window,
            "offset": window.offset,
            "meta": window.meta,
            "tokens": np.asarray(window.token_ids, dtype="<i4"),
            "pieces": pieces.window(window.token_ids.tolist()),
            "experts": np.ascontiguousarray(experts[b, :, :length]),
            "gates": np.ascontiguousarray(gates[b, :, :length]),
            "contribution": np.ascontiguousarray(contribution[b, :, :length]),
            "prob_sum": np.ascontiguousarray(prob_sum[b]),  # (L, E): the window's real tokens only
        }
        if lens is not None:
            top = lens[b, :, :length].numpy().astype("<i4")  # (L, T, K, J)
            record["logit_lens"] = top
            record["logit_lens_pieces"] = {str(int(t)): pieces(int(t)) for t in np.unique(top)}
        records.append(record)
    return records
