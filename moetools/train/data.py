"""Training data for monet-train: corpus -> tokenizer -> packed blocks, split by document.

The corpus is read by the one corpus reader (:mod:`moetools.corpus.documents`, ``fail``
policy): JSON lines with the text in ``text_field`` and, optionally, a domain in
``domain_field`` (eval loss is reported per domain), or plain text, one document a line.
Documents go to the eval split by a stable hash of their text (crc32), so the split does
not depend on line order or world size.
Documents are tokenized, joined with the end-of-text token and cut into blocks of
``seq_len`` tokens ("packing"); training blocks are visited in a seeded permutation per epoch
(:func:`block_indices`), a pure function of (seed, step), which is what makes resume exact.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

from ..corpus.documents import Document, read_corpus
from ..corpus.tokenize import LONG_DOCUMENT_CHARS, text_pieces, token_pieces
from ..errors import UsageError

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def read_training_documents(path, text_field: str = "text") -> list[Document]:
    """Every document of the corpus at ``path`` (``-`` is stdin), read with the one corpus reader
    (:func:`moetools.corpus.documents.read_corpus`) under the ``fail`` bad-line policy: the first
    unusable line (invalid UTF-8, invalid JSON, no text field) stops the run with
    ``FILE:LINE: reason`` (exit 2), since training on a silently shortened corpus is worse than
    stopping; binary data is refused (exit 2). Blank lines and empty documents are skipped (one
    warning counts the empty ones); a corpus with no document left is empty input (exit 3)."""
    return list(read_corpus(path, text_field=text_field, bad_lines="fail"))


def is_eval_document(document: Document, eval_fraction: float) -> bool:
    """Stable assignment to the eval split (crc32 of the text)."""
    return zlib.crc32(document.text.encode("utf-8")) % 10_000 < eval_fraction * 10_000


def split_documents(documents: list[Document], eval_fraction: float):
    """(train, eval) documents; at least one of each when there are two or more documents."""
    train = [d for d in documents if not is_eval_document(d, eval_fraction)]
    held = [d for d in documents if is_eval_document(d, eval_fraction)]
    if eval_fraction > 0 and not held and len(train) > 1:
        held = [train.pop()]
    if not train:
        train, held = held, held[:1]
    return train, held


def train_tokenizer(documents: list[Document], vocab_size: int):
    """A byte-level BPE trained on ``documents`` with ``tokenizers``, as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN, PAD_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # a long document goes in pieces cut at word starts (moetools.corpus.tokenize): the same words are
    # counted, so the same merges are learnt, without the trainer holding a 50 MB string's words at once
    texts = (piece for d in documents for piece in
             ([d.text] if len(d.text) <= LONG_DOCUMENT_CHARS else text_pieces(d.text)))
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(documents))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                                   pad_token=PAD_TOKEN, model_max_length=1_000_000)


def load_tokenizer(directory):
    """A tokenizer saved in a local directory (never the network); ModelError when it has none."""
    from ..models.loader import load_tokenizer as load_local_tokenizer

    tokenizer = load_local_tokenizer(directory, what=f"--tokenizer {directory}")
    if tokenizer.eos_token_id is None:
        raise UsageError(f"--tokenizer {directory}: the tokenizer has no end-of-text token")
    return tokenizer


def pack(documents: list[Document], tokenizer, seq_len: int) -> torch.Tensor:
    """Documents joined by the end-of-text token and cut into (blocks, seq_len) int64; the tail is dropped."""
    eos = np.array([tokenizer.eos_token_id], dtype=np.int64)
    stream: list[np.ndarray] = []  # (n,) int64 arrays: 8 bytes a token, not a Python int each
    for start in range(0, len(documents), 512):
        batch = documents[start:start + 512]
        short = [d.text for d in batch if len(d.text) <= LONG_DOCUMENT_CHARS]
        encoded = iter(tokenizer(short, add_special_tokens=False)["input_ids"] if short else [])
        for document in batch:
            if len(document.text) <= LONG_DOCUMENT_CHARS:
                stream.append(np.asarray(next(encoded), dtype=np.int64))
            else:  # tokenised in pieces: tokenizer memory bounded by a piece, not the document
                stream.extend(piece.astype(np.int64) for piece in
                              token_pieces(document.text, tokenizer, add_special_tokens=False))
            stream.append(eos)
    ids = np.concatenate(stream) if stream else np.empty(0, dtype=np.int64)
    blocks = len(ids) // seq_len
    return torch.from_numpy(ids[:blocks * seq_len].copy()).view(blocks, seq_len)


def pack_by_domain(documents: list[Document], tokenizer, seq_len: int,
                   domain_field: str = "domain") -> dict[str, torch.Tensor]:
    """Eval blocks per domain (``Document.domain(domain_field)``, "all" where a document has none;
    domains too short for one block are padded into one block with -100 labels later)."""
    domains: dict[str, list[Document]] = {}
    for document in documents:
        domains.setdefault(document.domain(domain_field), []).append(document)
    packed = {}
    for domain, docs in sorted(domains.items()):
        blocks = pack(docs, tokenizer, seq_len)
        if blocks.shape[0] == 0:  # a small domain: one short block
            ids = pack(docs, tokenizer, 1).flatten()[:seq_len]
            blocks = ids[None]
        packed[domain] = blocks
    return packed


def block_indices(step: int, global_batch: int, blocks: int, seed: int) -> torch.Tensor:
    """The training blocks of global step ``step`` (0-based): rows step*B .. step*B+B-1 of the
    concatenation of per-epoch permutations (seeded by seed and epoch)."""
    start = step * global_batch
    rows = []
    epoch = -1
    permutation = None
    for sample in range(start, start + global_batch):
        if sample // blocks != epoch:
            epoch = sample // blocks
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            permutation = torch.randperm(blocks, generator=generator)
        rows.append(permutation[sample % blocks])
    return torch.stack(rows)


def unigram_entropy_bits(blocks: torch.Tensor, vocab_size: int) -> float:
    """Entropy (bits/token) of the unigram distribution of the tokens in ``blocks``: the loss a
    model that ignores context would reach, the baseline for a loss curve."""
    counts = torch.bincount(blocks.flatten(), minlength=vocab_size).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum())


def nats_to_bits(nats: float) -> float:
    return nats / math.log(2)


__all__ = [
    "EOS_TOKEN",
    "PAD_TOKEN",
    "Document",
    "block_indices",
    "load_tokenizer",
    "pack",
    "pack_by_domain",
    "read_training_documents",
    "split_documents",
    "train_tokenizer",
    "unigram_entropy_bits",
]
