"""``self``: MONET self-explanation (paper 004 §4.3, "Self-explained Experts").

Paper 004: "The following prompt is given to the MONET-1.4B CHAT: 'Q: What is the
meaning of the word X ? A: Sure! The meaning of the word X is ', where X serves
as a placeholder for averaged token embeddings activated to the targeted expert."

Here X is the mean of the input embeddings (``model.get_input_embeddings()``) of
the tokens at the expert's activating positions (activation > 0) in the contexts
shown to it, each occurrence counted once. Token ids come from a context's
``tokens`` when the samples carry them, else from re-encoding its ``pieces``
with the model's tokenizer. The prompt is built as ``inputs_embeds`` with the
vector at both X positions, and the model continues it greedily; the label is
that continuation up to the end of its first sentence (e.g. "Cartilage"), not a
"This expert specializes in" sentence. Works with any transformers causal LM
that takes ``inputs_embeds`` — MONET (``moetools.models.monet``, when present)
or any other.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass

from ..llm.base import Completion, Options, Usage, option, require
from ..llm.local import load_causal_lm
from .method import Explainer, ExplainJob

SELF_PROMPT = "Q: What is the meaning of the word X ? A: Sure! The meaning of the word X is "
PLACEHOLDER = "X"


def parse_meaning(text: str | None) -> str | None:
    """The continuation up to its first sentence end or line break, without quotes; None when empty."""
    if not text:
        return None
    first = re.split(r"(?<=[^.])[.!?](?=\s|$)|\n", text.strip(), maxsplit=1)[0]
    first = first.strip().strip("\"'“”‘’*").strip()
    return first if re.search(r"\w", first) else None


@dataclass
class SelfOptions(Options):
    """Options of the ``self`` method."""

    model: str | None = option(None, "a chat-tuned MONET directory (or any causal LM taking inputs_embeds); required")
    max_tokens: int = option(64, "most tokens of the continuation")
    device: str = option("cpu", "torch device")

    def check(self) -> None:
        require(bool(self.model), "--backend self needs --model DIR (a chat-tuned MONET, or any causal LM)")
        require(self.max_tokens >= 1, f"--max-tokens must be >= 1 (got {self.max_tokens})")


class SelfExplainer(Explainer):
    """See the module docstring."""

    options_class = SelfOptions
    summary = "MONET self-explanation (paper 004 §4.3): the model reads its own averaged expert embedding"
    uses_chat_prompt = False
    deterministic = True
    prompt_kind = "self"

    def __init__(self, options, accounting):
        super().__init__(options, accounting)
        self.device = options.device
        self._lm = self._tokenizer = None
        self._lock = asyncio.Lock()

    @property
    def concurrency(self) -> int:
        return 1

    def identity(self) -> dict:
        return {"backend": self.name, "model": os.path.basename(str(self.model).rstrip("/")),
                "method": "MONET self-explanation (paper 004 §4.3): averaged embeddings of the activating "
                          "tokens at X in: " + SELF_PROMPT}

    def interpret(self, completion: Completion) -> tuple[str | None, str | None]:
        meaning = parse_meaning(completion.text)
        return (meaning, None) if meaning is not None else (None, "the continuation has no words")

    async def start(self) -> None:
        if self._lm is None:
            self._lm, self._tokenizer = await asyncio.to_thread(load_causal_lm, self.model, self.device)

    def activating_token_ids(self, job: ExplainJob) -> list[int]:
        """Ids of the tokens at every activating position of the shown contexts, in order."""
        ids: list[int] = []
        for context in job.examples:
            tokens = context.get("tokens")
            for position, value in enumerate(context["activation"]):
                if float(value) <= 0.0:
                    continue
                if tokens is not None:
                    ids.append(int(tokens[position]))
                else:
                    ids.extend(self._tokenizer(context["pieces"][position], add_special_tokens=False)["input_ids"])
        return ids

    def request_identity(self, job: ExplainJob) -> dict:
        return {"backend": self.name, "model": self.identity()["model"], "prompt": SELF_PROMPT,
                "token_ids": self.activating_token_ids(job),
                "parameters": {"max_tokens": self.options.max_tokens}}

    async def complete(self, job: ExplainJob) -> Completion:
        async with self._lock:
            completion = await asyncio.to_thread(self._generate, job)
        job.requests += 1
        self.accounting.requests += 1
        self.accounting.max_in_flight = max(self.accounting.max_in_flight, 1)
        self.accounting.add_usage(completion.usage)
        return completion

    def _prompt_ids(self) -> tuple[list[list[int]], list[int]]:
        """Token ids of the text between the X slots, and the leading special tokens."""
        segments = _split_placeholder(SELF_PROMPT)
        encoded = [self._tokenizer(segment, add_special_tokens=False)["input_ids"] for segment in segments]
        with_special = self._tokenizer("a")["input_ids"]
        bare = self._tokenizer("a", add_special_tokens=False)["input_ids"]
        leading = with_special[: len(with_special) - len(bare)] if with_special[-len(bare):] == bare else []
        return encoded, leading

    def _generate(self, job: ExplainJob) -> Completion:
        import torch

        ids = self.activating_token_ids(job)
        if not ids:
            return Completion(text="")
        lm, tokenizer = self._lm, self._tokenizer
        embed = lm.get_input_embeddings()
        segments, leading = self._prompt_ids()
        with torch.inference_mode():
            meaning = embed(torch.tensor(ids, device=self.device)).mean(dim=0, keepdim=True)  # (1, d)
            parts = [embed(torch.tensor(leading, device=self.device))] if leading else []
            for number, segment in enumerate(segments):
                if segment:
                    parts.append(embed(torch.tensor(segment, device=self.device)))  # (t, d)
                if number < len(segments) - 1:
                    parts.append(meaning.to(embed.weight.dtype))
            inputs_embeds = torch.cat(parts, dim=0).unsqueeze(0)  # (1, T, d)
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=self.device)
            output = lm.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, do_sample=False,
                                 max_new_tokens=self.options.max_tokens,
                                 pad_token_id=tokenizer.pad_token_id)
        generated = output[0]  # with inputs_embeds only, generate returns just the new tokens
        text = tokenizer.decode(generated, skip_special_tokens=True)
        return Completion(text=text, usage=Usage(int(inputs_embeds.shape[1]), int(generated.numel())),
                          details={"averaged_tokens": len(ids), "distinct_tokens": len(set(ids)),
                                   "generated_token_ids": [int(i) for i in generated]})


def _split_placeholder(prompt: str) -> list[str]:
    """The prompt's text around each standalone X: ``["Q: ... the word ", " ? A: ... the word ", " is "]``."""
    return re.split(r"(?<=\s)X(?=\s)", prompt)
