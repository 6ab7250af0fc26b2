"""Per-domain next-token loss over a JSON-lines corpus (one corpus reader: moetools.corpus), by one of two
definitions of which tokens are scored (:data:`LOSS_DEFINITIONS`).

``no-prefix`` (moe-eval's default): each document is tokenised with the tokenizer's own special tokens and
nothing put before it; a document longer than ``max_length`` tokens is cut into consecutive windows, each
scored on its own, so the first token of every window is context only (tokens 2..n of a one-window
document are scored). loss(d) = Σ_{documents of d} Σ_t −log p(x_t | x_<t) / (number of scored tokens of d),
in nats; perplexity = exp(loss), a token perplexity.

``lm-eval``: lm-evaluation-harness's ``loglikelihood_rolling`` (moetools.eval.rolling): the prefix token
before each document, every token scored, long documents in lm-eval's rolling windows; besides the token
loss and perplexity, the domain's log-likelihood and lm-eval's word perplexity exp(−Σll / Σwords), byte
perplexity exp(−Σll / Σbytes) and bits per byte −Σll / Σbytes / ln 2.

Documents are read in chunks of ``chunk`` and batched by length within a chunk (padding at most
``batch_tokens`` tokens per batch), so memory is bounded whatever the corpus length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from ..streams.schemas.eval import LOSS_DEFINITIONS  # the --loss-definition choices, the default first
from .rolling import count_bytes, count_words, encode_document, prefix_token_id, rolling_windows


def _windows(ids: list[int], max_length: int) -> list[tuple[list[int], int]]:
    """``no-prefix``: consecutive windows of ``max_length`` tokens, every token but each window's first scored."""
    return [(ids[start:start + max_length], len(ids[start:start + max_length]) - 1)
            for start in range(0, len(ids), max_length) if len(ids[start:start + max_length]) > 1]


def sequence_losses(model, batch: list[tuple[list[int], int]], pad_id: int):
    """(summed −log p, scored count) per (sequence, scored) of ``batch``: the model reads ``sequence[:-1]``;
    the last ``scored`` of its predictions of ``sequence[1:]`` are summed (the loss monet-train and moe-tune
    evaluate with: :func:`moetools.training.loss.sequence_losses`)."""
    import torch

    device = next(model.parameters()).device
    width = max(len(ids) for ids, _ in batch) - 1
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    targets = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    scored = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, (ids, count) in enumerate(batch):
        length = len(ids) - 1
        input_ids[row, :length] = torch.tensor(ids[:-1])
        targets[row, :length] = torch.tensor(ids[1:])
        mask[row, :length] = 1
        scored[row, length - count:length] = True
    from ..training.loss import sequence_losses as scored_sequence_losses

    return scored_sequence_losses(model, input_ids.to(device), targets, scored, attention_mask=mask.to(device),
                                  use_cache=None)


def _document_sequences(tokenizer, text: str, definition: str, max_length: int, prefix_id: int | None):
    if definition == "lm-eval":
        return rolling_windows(encode_document(tokenizer, text, prefix_id), prefix_id, max_length)
    return _windows(tokenizer(text, add_special_tokens=True)["input_ids"], max_length)


def _domain_values(docs: int, tokens: int, loss_sum: float, words: int, size: int, definition: str) -> dict:
    loss = loss_sum / tokens if tokens else None
    values = {"documents": int(docs), "tokens": int(tokens), "loss": loss,
              "perplexity": math.exp(loss) if loss is not None else None}
    if definition == "lm-eval":
        values.update({"loglikelihood": -loss_sum if tokens else None, "words": int(words), "bytes": int(size),
                       "word_perplexity": math.exp(loss_sum / words) if tokens and words else None,
                       "byte_perplexity": math.exp(loss_sum / size) if tokens and size else None,
                       "bits_per_byte": loss_sum / size / math.log(2) if tokens and size else None})
    return values


def domain_loss(model, tokenizer, documents: Iterable, *, domain_field: str = "domain", max_length: int = 512,
                batch_tokens: int = 4096, chunk: int = 256, definition: str = "no-prefix",
                on_batch: Callable[[int], None] | None = None, on_read: Callable[[int], None] | None = None,
                per_document: dict | None = None) -> dict:
    """{domain: {"documents", "tokens", "loss", "perplexity"}} over ``documents`` (moetools Documents); with
    ``definition="lm-eval"`` also "loglikelihood", "words", "bytes", "word_perplexity", "byte_perplexity",
    "bits_per_byte" (formats/eval.md). ``on_batch(sequences)`` follows each batch scored, ``on_read(sequences)``
    each document read (its sequences wait for a batch: progress counts the share scored). ``per_document``:
    filled with ``{document index: [doc_id, domain, tokens, -Σ log p]}`` (the bootstrap's units,
    moetools.eval.bootstrap)."""
    from ..errors import ModelError, UsageError

    if definition not in LOSS_DEFINITIONS:
        raise UsageError(f"unknown loss definition {definition!r} (one of {', '.join(LOSS_DEFINITIONS)})")
    prefix_id = prefix_token_id(tokenizer) if definition == "lm-eval" else None
    if definition == "lm-eval" and prefix_id is None:
        raise ModelError("--loss-definition lm-eval: the tokenizer has neither a BOS nor an EOS token to put "
                         "before each document")
    totals: dict[str, list] = {}  # domain -> [documents, tokens, -Σ log p, words, bytes]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def flush(pending):
        pending.sort(key=lambda item: len(item[1][0]))   # (domain, doc_id) with each sequence
        batch, domains = [], []
        for domain, sequence in pending + [(None, None)]:
            if sequence is None or (batch and (len(batch) + 1) * (len(sequence[0]) - 1) > batch_tokens):
                for (d, doc), (loss, count) in zip(domains, sequence_losses(model, batch, pad_id) if batch else []):
                    totals[d][1] += count
                    totals[d][2] += loss
                    if per_document is not None:
                        per_document[doc][2] += count
                        per_document[doc][3] += loss
                if on_batch and batch:
                    on_batch(len(batch))
                batch, domains = [], []
            if sequence is not None:
                batch.append(sequence)
                domains.append(domain)

    pending = []
    for document in documents:
        domain = document.domain(domain_field)
        entry = totals.setdefault(domain, [0, 0, 0.0, 0, 0])
        entry[0] += 1
        sequences = _document_sequences(tokenizer, document.text, definition, max_length, prefix_id)
        if definition == "lm-eval":  # lm-eval counts every document's words and bytes, even one with no token
            entry[3] += count_words(document.text)
            entry[4] += count_bytes(document.text)
        if per_document is not None:
            per_document[document.index] = [document.doc_id, domain, 0, 0.0]
        pending.extend(((domain, document.index), sequence) for sequence in sequences)
        if on_read:
            on_read(len(sequences))
        if len(pending) >= chunk:
            flush(pending)
            pending = []
    flush(pending)
    return {domain: _domain_values(*totals[domain], definition) for domain in sorted(totals)}
