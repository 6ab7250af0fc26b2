"""Turning one batch's captured routing into ``sequence`` records (formats/trace.md)."""

from __future__ import annotations

import numpy as np
import torch

FLOAT_DTYPES = {"f2": np.dtype("<f2"), "f4": np.dtype("<f4")}


def id_dtype(num_experts: int) -> np.dtype:
    """The smallest unsigned dtype that holds every expert id (formats/trace.md, ``experts``)."""
    if num_experts <= 1 << 8:
        return np.dtype("|u1")
    if num_experts <= 1 << 16:
        return np.dtype("<u2")
    return np.dtype("<u4")


class PieceTable:
    """The text of each token id (``tokenizer.decode([id])``), cached: bounded by the vocabulary."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        piece = self._cache.get(token_id)
        if piece is None:
            piece = self.tokenizer.decode([token_id], skip_special_tokens=False,
                                          clean_up_tokenization_spaces=False)
            self._cache[token_id] = piece
        return piece


def batch_records(windows, layers: list[dict], *, seq_len: int, num_experts: int, pieces: PieceTable,
                  float_dtype: str = "f2") -> list[dict]:
    """One record per window; ``layers`` from :meth:`RoutingCapture.take` over a (B, seq_len) batch."""
    ids_type = id_dtype(num_experts)
    value_type = FLOAT_DTYPES[float_dtype]
    batch = len(windows)

    def per_window(name, dtype):  # (L, N, ...) -> numpy (B, L, T_max, ...)
        stacked = torch.stack([layer[name] for layer in layers])  # (L, B·T, ...)
        stacked = stacked.reshape(len(layers), batch, seq_len, *stacked.shape[2:]).transpose(0, 1)
        return stacked.numpy().astype(dtype, copy=False) if dtype is not None else stacked

    experts = per_window("ids", ids_type)  # (B, L, T, K)
    gates = per_window("gates", None).float().numpy().astype(value_type)  # (B, L, T, K)
    contribution = per_window("contribution", None).numpy().astype(value_type)
    probs = per_window("probs", None)  # (B, L, T, E) fp32 tensor
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
            "pieces": [pieces(t) for t in window.token_ids],
            "experts": np.ascontiguousarray(experts[b, :, :length]),
            "gates": np.ascontiguousarray(gates[b, :, :length]),
            "contribution": np.ascontiguousarray(contribution[b, :, :length]),
            # fp32 sums over the window's tokens only (padding excluded), fp64 accumulation
            "prob_sum": probs[b, :, :length].double().sum(dim=1).float().numpy(),  # (L, E)
        }
        if lens is not None:
            top = lens[b, :, :length].numpy().astype("<i4")  # (L, T, K, J)
            record["logit_lens"] = top
            record["logit_lens_pieces"] = {str(int(t)): pieces(int(t)) for t in np.unique(top)}
        records.append(record)
    return records
