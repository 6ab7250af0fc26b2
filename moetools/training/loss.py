"""Next-token loss per sequence and per domain: the one definition monet-train's and moe-tune's
evaluations and moe-eval share.

A batch is ``input_ids`` (what the model reads), ``targets`` (position t's target is the token the
model should predict after reading ``input_ids[:, :t+1]``) and ``scored`` (which targets count). The
loss of a row is Σ −log p(targets_t | input_ids_≤t) over its scored positions (log-softmax in float32,
nats); a domain's loss is the sum over its rows divided by its scored-token count.
"""

from __future__ import annotations

import contextlib

import torch


def scored_log_loss(logits: torch.Tensor, targets: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """Per row, Σ −log p(target) over the scored positions: ``logits [B, T, V]`` -> ``[B]`` float32."""
    safe = targets.masked_fill(~scored, 0)  # unscored targets (padding, -100 labels) index nothing that counts
    logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe[..., None])[..., 0]  # (B, T)
    return -torch.where(scored, logprobs, 0.0).sum(-1)


@torch.no_grad()
def sequence_losses(model, input_ids: torch.Tensor, targets: torch.Tensor, scored: torch.Tensor,
                    attention_mask: torch.Tensor | None = None, autocast=None,
                    use_cache: bool | None = False) -> list[tuple[float, int]]:
    """(summed −log p, scored count) per row of a batch; ``targets`` may be shorter than ``input_ids``
    (the model's predictions after the last ``len(input_ids) - len(targets)`` tokens are not used).
    ``use_cache=None``: the model's own default (not passed)."""
    device = input_ids.device
    extra = {} if use_cache is None else {"use_cache": use_cache}
    with autocast() if autocast is not None else contextlib.nullcontext():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
    logits = logits[:, :targets.shape[1]]
    scored = scored.to(device)
    sums = scored_log_loss(logits, targets.to(device), scored)
    return [(float(s), int(n)) for s, n in zip(sums.tolist(), scored.sum(-1).tolist())]


def shifted(input_ids: torch.Tensor, labels: torch.Tensor | None = None, ignore: int = -100):
    """(targets, scored) for a model that reads ``input_ids`` and predicts each next token: the targets are
    ``labels[:, 1:]`` (default: ``input_ids[:, 1:]``), scored where they are not ``ignore``."""
    targets = (input_ids if labels is None else labels)[:, 1:]
    return targets, targets != ignore


class DomainLosses:
    """Summed loss and scored-token count per domain (and per any other key), in the order added."""

    def __init__(self):
        self.sums: dict[str, list] = {}  # key -> [summed loss, tokens]

    def add(self, key: str, loss_sum: float, tokens: int) -> None:
        entry = self.sums.setdefault(key, [0.0, 0])
        entry[0] += loss_sum
        entry[1] += tokens

    def means(self, *, sort: bool = True) -> dict[str, float]:
        """{key: summed loss / tokens} for every key with a scored token (keys sorted, or in the order added)."""
        items = sorted(self.sums.items()) if sort else self.sums.items()
        return {key: s / n for key, (s, n) in items if n}

    def overall(self) -> float | None:
        """Summed loss over every key / tokens over every key (None without a scored token)."""
        tokens = sum(n for _, n in self.sums.values())
        return sum(s for s, _ in self.sums.values()) / tokens if tokens else None


__all__ = ["DomainLosses", "scored_log_loss", "sequence_losses", "shifted"]
