"""Per-domain next-token loss over a JSON-lines corpus (one corpus reader: moetools.corpus).

loss(d) = Σ_{documents of d} Σ_t −log p(x_t | x_<t) / (number of predicted tokens of d), in nats;
perplexity = exp(loss). A document longer than ``max_length`` tokens is cut into consecutive windows,
each scored on its own (the first token of every window is context only). Documents are read in chunks
of ``chunk`` and batched by length within a chunk (padding at most ``batch_tokens`` tokens per batch),
so memory is bounded whatever the corpus length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable


def _windows(ids: list[int], max_length: int) -> list[list[int]]:
    return [ids[start:start + max_length] for start in range(0, len(ids), max_length)
            if len(ids[start:start + max_length]) > 1]


def sequence_losses(model, batch: list[list[int]], pad_id: int):
    """(summed −log p over predicted tokens, predicted token count) per sequence of ``batch``."""
    import torch

    device = next(model.parameters()).device
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        mask[row, :len(ids)] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask).logits.float()  # (B, T, V)
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None])[..., 0]  # (B, T-1)
    valid = mask[:, 1:].bool()
    sums = -(logprobs * valid).sum(-1)
    return [(float(s), int(n)) for s, n in zip(sums.tolist(), valid.sum(-1).tolist())]


def domain_loss(model, tokenizer, documents: Iterable, *, domain_field: str = "domain", max_length: int = 512,
                batch_tokens: int = 4096, chunk: int = 256, on_batch: Callable[[int], None] | None = None) -> dict:
    """{domain: {"documents", "tokens", "loss", "perplexity"}} over ``documents`` (moetools Documents)."""
    totals: dict[str, list[float]] = {}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def flush(pending):
        pending.sort(key=lambda item: len(item[1]))
        batch, domains = [], []
        for domain, ids in pending + [(None, None)]:
            if ids is None or (batch and (len(batch) + 1) * len(ids) > batch_tokens):
                for d, (loss, count) in zip(domains, sequence_losses(model, batch, pad_id) if batch else []):
                    totals[d][1] += count
                    totals[d][2] += loss
                if on_batch and batch:
                    on_batch(len(batch))
                batch, domains = [], []
            if ids is not None:
                batch.append(ids)
                domains.append(domain)

    pending = []
    for document in documents:
        domain = document.domain(domain_field)
        totals.setdefault(domain, [0, 0, 0.0])[0] += 1
        ids = tokenizer(document.text, add_special_tokens=True)["input_ids"]
        pending.extend((domain, window) for window in _windows(ids, max_length))
        if len(pending) >= chunk:
            flush(pending)
            pending = []
    flush(pending)
    result = {}
    for domain in sorted(totals):
        docs, tokens, loss_sum = totals[domain]
        loss = loss_sum / tokens if tokens else None
        result[domain] = {"documents": int(docs), "tokens": int(tokens), "loss": loss,
                          "perplexity": math.exp(loss) if loss is not None else None}
    return result
