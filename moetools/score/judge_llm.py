"""The LLM scorer: paper 000's A.2 prompt through any :mod:`moetools.llm` client, cached, re-asked when unparsable.

One request per (label, order of the samples): the answer is parsed by
:func:`moetools.score.judge_prompts.parse_answer`; an answer that is not a list of valid numbers or
"None" (or one cut off at ``max_tokens``) is asked again (``attempts`` in all; from the second attempt with at least
``retry_temperature`` so that a greedy model can answer differently) and finally recorded as a
failure. Only parsable answers are cached, so a rerun sends no request for an answer it has.
The cache namespace is ``score`` (moe-explain uses ``explain``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..llm.base import Accounting, BackendError, CompletionClient
from ..llm.cache import ResponseCache, through_cache
from .judge_prompts import build_scorer_messages, parse_answer

CACHE_NAMESPACE = "score"


@dataclass
class JudgeAccounting(Accounting):
    """The client's counters plus moe-score's per-request outcomes (end record ``accounting``)."""

    answer_retries: int = 0     # answers that did not parse and were asked again
    failures: int = 0           # predictions recorded as failed (after every attempt, or a transport failure)
    predictions: int = 0        # predictions made (one per label x repeat)


@dataclass
class Prediction:
    chosen: list[bool] | None          # per sample in the order shown; None when it failed
    error: str | None = None
    attempts: int = 0
    requests: int = 0
    cache_hits: int = 0
    raw: str | None = None
    scores: list[float] | None = None      # the embedding scorer's similarity per sample, in the order shown
    threshold: float | None = None         # ... and the cut-off it applied


class LLMScorer:
    kind = "llm"
    repeats_matter = True

    def __init__(self, client: CompletionClient, *, cache: ResponseCache | None = None, attempts: int = 3,
                 retry_temperature: float = 0.7):
        self.client = client
        self.accounting = JudgeAccounting()
        client.accounting = self.accounting        # one set of counters for the run
        self.cache = cache
        self.attempts = max(1, attempts)
        self.retry_temperature = retry_temperature

    def describe(self) -> dict:
        return {"kind": "llm", **self.client.label(), "prompt": "paper 000 appendix A.2"}

    def prepare(self) -> None:
        self.client.prepare()

    async def start(self) -> None:
        await self.client.start()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def predict(self, explanation: str, contexts: list[dict], fit=None) -> Prediction:
        messages = build_scorer_messages(explanation, contexts)
        n = len(contexts)
        result = Prediction(None)

        def accept(completion) -> bool:
            return not completion.truncated and parse_answer(completion.text, n)[0] is not None

        for attempt in range(self.attempts):
            temperature = None if attempt == 0 else max(self.client.options.temperature, self.retry_temperature)
            identity = None
            if self.cache is not None:
                identity = self.client.request_identity(messages, temperature=temperature)
                identity["attempt"] = attempt
            if attempt:
                self.accounting.answer_retries += 1
            result.attempts = attempt + 1
            try:
                completion = await through_cache(
                    self.cache, identity, lambda t=temperature: self.client.complete(messages, temperature=t),
                    accept=accept, accounting=self.accounting)
            except BackendError as error:
                result.requests += error.requests
                result.error, result.raw = str(error), None
                break                      # the client already retried the transport
            result.requests += completion.usage.requests
            result.cache_hits += int(completion.cached)
            chosen, why = parse_answer(completion.text, n)
            if completion.truncated:   # a list cut at --max-tokens may lack numbers: never taken as complete
                chosen, why = None, "answer cut off at --max-tokens (finish_reason \"length\"); raise --max-tokens"
            if chosen is not None:
                result.chosen, result.error, result.raw = [i + 1 in chosen for i in range(n)], None, None
                break
            result.error, result.raw = why, completion.text
        self.accounting.predictions += 1
        if result.chosen is None:
            self.accounting.failures += 1
        return result


__all__ = ["CACHE_NAMESPACE", "JudgeAccounting", "LLMScorer", "Prediction"]
