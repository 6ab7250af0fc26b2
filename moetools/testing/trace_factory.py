"""Synthetic trace streams (formats/trace.md) with known activations, for moe-sample's tests and bench.

``make_records`` draws, for every token and MoE layer, ``top_k`` distinct
experts and a positive contribution for each, from a seeded generator: the
test then knows every activation and can compute the true answer directly.
"""

from __future__ import annotations

import io

import numpy as np

from moetools.streams import StreamWriter

MODEL = {"name": "synthetic-moe", "path": None, "model_type": "olmoe", "num_layers": 4, "moe_layers": [0, 2],
         "num_experts": 8, "top_k": 2, "fingerprint": "sha256:synthetic"}


def make_records(*, documents: int = 6, tokens: int = 200, max_length: int = 64, layers=(0, 2),
                 num_experts: int = 8, top_k: int = 2, seed: int = 0, domains=("code", "legal"),
                 logit_lens: int = 0, vocab: int = 50, id_dtype="<u2", value_dtype="<f4",
                 rare_expert: int | None = None) -> list[dict]:
    """Sequence records: each document cut into consecutive windows of ``max_length`` tokens.

    ``rare_expert`` (if given) is routed to only on a handful of tokens, so it comes out short.
    """
    rng = np.random.default_rng(seed)
    records = []
    for d in range(documents):
        length = int(tokens if np.isscalar(tokens) else tokens[d])
        token_ids = rng.integers(0, vocab, size=length).astype("<i4")
        for window, start in enumerate(range(0, length, max_length)):
            ids = token_ids[start:start + max_length]
            count = len(ids)
            scores = rng.random((len(layers), count, num_experts))
            if rare_expert is not None:
                scores[..., rare_expert] = -1.0
                hit = rng.random((len(layers), count)) < 0.01
                scores[..., rare_expert][hit] = 2.0
            experts = np.argsort(-scores, axis=-1)[..., :top_k].astype(id_dtype)  # (L, T, K)
            gates = rng.dirichlet(np.ones(top_k), size=(len(layers), count)).astype(value_dtype)
            contribution = (gates.astype(np.float32) * rng.lognormal(0.0, 1.0, size=gates.shape)).astype(value_dtype)
            record = {"type": "sequence", "doc_id": f"doc{d}", "window": window, "offset": start,
                      "meta": {"domain": domains[d % len(domains)], "toxicity": float(d % 3) / 2},
                      "tokens": ids, "pieces": [f"t{int(t)}" for t in ids], "experts": experts, "gates": gates,
                      "contribution": contribution,
                      "prob_sum": rng.random((len(layers), num_experts)).astype("<f4")}
            if logit_lens:
                lens = rng.integers(0, vocab, size=(len(layers), count, top_k, logit_lens)).astype("<i4")
                record["logit_lens"] = lens
                record["logit_lens_pieces"] = {str(int(t)): f"L{int(t)}" for t in np.unique(lens)}
            records.append(record)
    return records


def header_extra(layers=(0, 2), num_experts: int = 8, top_k: int = 2, max_length: int = 64) -> dict:
    return {"layers": list(layers), "num_experts": num_experts, "top_k": top_k, "max_length": max_length,
            "corpus": "synthetic", "shard": None}


def write_trace(records: list[dict], *, layers=(0, 2), num_experts: int = 8, top_k: int = 2, max_length: int = 64,
                encoding: str = "msgpack", compress: bool = True, close: bool = True) -> bytes:
    """One trace segment holding ``records`` as bytes (without its end record when ``close`` is False)."""
    out = io.BytesIO()
    model = dict(MODEL, num_experts=num_experts, top_k=top_k, moe_layers=list(layers))
    writer = StreamWriter(out, "trace", tool={"name": "trace_factory"}, model=model, encoding=encoding,
                          compress=compress, header_extra=header_extra(layers, num_experts, top_k, max_length))
    for record in records:
        writer.write(record)
    if close:
        writer.close()
    else:
        writer.flush()
    return out.getvalue()
