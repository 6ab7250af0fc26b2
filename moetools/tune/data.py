"""moe-tune's data: plain-text JSON lines (packed) or chat JSON lines (loss on assistant tokens only).

Every example is a row of three ``(N, T)`` tensors: ``input_ids``, ``labels`` (-100 = no loss)
and ``attention_mask``.

- **Plain text** (``{"text": ...}`` lines, or plain lines; read with
  :func:`moetools.corpus.documents.read_corpus`, ``bad_lines="fail"``): documents are tokenized,
  joined by the end-of-text token when the tokenizer has one, and cut into blocks of ``seq_len``
  tokens (the tail is dropped; a corpus shorter than one block gives one short block). Every
  token is a label.
- **Chat** (``{"messages": [{"role": ..., "content": ...}, ...]}``, detected on the first line):
  each conversation is one row, rendered with the tokenizer's chat template, truncated to
  ``seq_len`` and padded. The tokens of assistant message k are those the rendering of
  messages[:k+1] adds to the rendering of messages[:k] with the generation prompt (the
  template's prefix property), so only what the assistant wrote carries loss.

``read_corpus`` takes one string field per document, so chat lines are parsed here with the same
policy (the first bad line is a UsageError naming file and line).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..corpus.documents import read_corpus, read_json_objects
from ..errors import UsageError
from ..streams.files import open_input

IGNORE = -100


@dataclass
class Examples:
    input_ids: torch.Tensor       # (N, T) int64
    labels: torch.Tensor          # (N, T) int64, IGNORE where no loss
    attention_mask: torch.Tensor  # (N, T) int64
    domains: list[str]            # per row
    kind: str                     # "text" or "chat"

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def rows(self, index) -> Examples:
        index = torch.as_tensor(index, dtype=torch.long)
        return Examples(self.input_ids[index], self.labels[index], self.attention_mask[index],
                        [self.domains[int(i)] for i in index], self.kind)

    def label_tokens(self, index=None) -> int:
        """Tokens carrying loss after the shift (labels[:, 1:] != IGNORE) in rows ``index``."""
        labels = self.labels if index is None else self.labels[torch.as_tensor(index, dtype=torch.long)]
        return int((labels[:, 1:] != IGNORE).sum())


def eval_rows(domains: list[str], limit: int) -> tuple[list[int], list[str]]:
    """(row indices, domains left out): at most ``limit`` rows taking the domains in turn (each
    domain's rows in file order), so ``--eval-batches`` covers every domain of an eval file when it
    holds at least one row per domain; the domains it cannot cover are named, never dropped silently."""
    by_domain: dict[str, list[int]] = {}
    for row, domain in enumerate(domains):
        by_domain.setdefault(domain, []).append(row)
    order = [rows[turn] for turn in range(max((len(r) for r in by_domain.values()), default=0))
             for rows in by_domain.values() if turn < len(rows)]
    chosen = order[:limit]
    covered = {domains[row] for row in chosen}
    return chosen, [domain for domain in by_domain if domain not in covered]


def _first_record(path) -> dict | None:
    with open_input(path) as handle:
        for raw in handle:
            line = raw.decode("utf-8", errors="replace").strip()
            if line:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    return None
                return record if isinstance(record, dict) else None
    return None


def is_chat_file(path) -> bool:
    record = _first_record(path)
    return record is not None and "messages" in record


def read_chats(path, domain_field: str = "domain") -> list[tuple[list[dict], str]]:
    """(messages, domain) per line; bad lines fail with file and line."""
    chats = []
    for number, record in read_json_objects(path):
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise UsageError(f"{path}:{number}: 'messages' must be a non-empty list of "
                             "{role, content} objects")
        if not any(m["role"] == "assistant" for m in messages):
            raise UsageError(f"{path}:{number}: no assistant message: nothing to learn")
        chats.append((messages, str(record.get(domain_field, "all"))))
    return chats


def _render(tokenizer, messages, generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # BatchEncoding in transformers 5
        ids = ids["input_ids"]
    return list(ids)


def chat_example(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one conversation; labels IGNORE outside assistant messages."""
    ids = _render(tokenizer, messages, False)
    labels = [IGNORE] * len(ids)
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:k], True)) if k else 0
        end = len(_render(tokenizer, messages[:k + 1], False))
        if ids[:end] != _render(tokenizer, messages[:k + 1], False):
            raise UsageError("the tokenizer's chat template does not render conversations prefix by prefix; "
                             "cannot tell assistant tokens apart")
        labels[start:end] = ids[start:end]
    return ids, labels


def _pad_token(tokenizer) -> int:
    for token in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if token is not None:
            return int(token)
    return 0


def pack_texts(texts: list[str], domains: list[str], tokenizer, seq_len: int) -> Examples:
    """Packed blocks of ``seq_len`` tokens; a block's domain is that of its first token's document."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    owners: list[int] = []
    for start in range(0, len(texts), 512):
        encoded = tokenizer(texts[start:start + 512], add_special_tokens=False)["input_ids"]
        for offset, ids in enumerate(encoded):
            piece = list(ids) + ([eos] if eos is not None else [])
            stream.extend(piece)
            owners.extend([start + offset] * len(piece))
    if not stream:
        raise UsageError("the text tokenizes to nothing")
    blocks = max(1, len(stream) // seq_len)
    length = min(seq_len, len(stream))
    ids = torch.tensor(stream[:blocks * length], dtype=torch.long).view(blocks, length)
    block_domains = [domains[owners[b * length]] for b in range(blocks)]
    return Examples(ids, ids.clone(), torch.ones_like(ids), block_domains, "text")


def load_examples(path, tokenizer, seq_len: int, *, text_field: str = "text", domain_field: str = "domain") -> Examples:
    """Examples of one data file (plain or chat, decided by its first line)."""
    if path != "-" and not Path(path).exists():
        raise UsageError(f"cannot open {path}: no such file")
    if path != "-" and Path(path).is_dir():
        raise UsageError(f"cannot open {path}: a directory, not a data file")
    if is_chat_file(path):
        if getattr(tokenizer, "chat_template", None) is None:
            raise UsageError(f"{path} is chat data but the model's tokenizer has no chat template")
        pad = _pad_token(tokenizer)
        rows_ids, rows_labels, domains = [], [], []
        for messages, domain in read_chats(path, domain_field):
            ids, labels = chat_example(tokenizer, messages)
            rows_ids.append(ids[:seq_len])
            rows_labels.append(labels[:seq_len])
            domains.append(domain)
        length = max(len(r) for r in rows_ids)
        ids = torch.full((len(rows_ids), length), pad, dtype=torch.long)
        labels = torch.full((len(rows_ids), length), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows_ids), length), dtype=torch.long)
        for row, (i, lab) in enumerate(zip(rows_ids, rows_labels)):
            ids[row, :len(i)], labels[row, :len(lab)], mask[row, :len(i)] = torch.tensor(i), torch.tensor(lab), 1
        return _with_labels(Examples(ids, labels, mask, domains, "chat"), path, seq_len)
    documents = list(read_corpus(path, text_field=text_field, bad_lines="fail"))  # refuses an empty corpus
    return _with_labels(pack_texts([d.text for d in documents], [d.domain(domain_field) for d in documents],
                                   tokenizer, seq_len), path, seq_len)


def _with_labels(examples: Examples, path, seq_len: int) -> Examples:
    """``examples``, unless no token carries a loss: training would take steps at loss 0 and learn nothing."""
    if examples.label_tokens() == 0:
        why = ("no assistant token within the first --seq-len tokens of any conversation"
               if examples.kind == "chat" else "every sequence is a single token")
        raise UsageError(f"{path}: no token carries a loss ({why}, --seq-len {seq_len}): nothing to train "
                         "or evaluate on")
    return examples


__all__ = ["IGNORE", "Examples", "chat_example", "eval_rows", "is_chat_file", "load_examples", "pack_texts", "read_chats"]
