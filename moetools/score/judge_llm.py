"""The LLM scorer: paper 000's A.2 prompt through any :mod:`moetools.llm` client, cached, re-asked when unparsable.

One exchange (:func:`moetools.llm.exchange.ask`) per (label, order of the samples): the answer is parsed by
:func:`moetools.score.judge_prompts.parse_answer`; an answer that is not a list of valid numbers or
"None" (or one cut off at ``max_tokens``) is asked again (``attempts`` in all; from the second attempt with at least
``retry_temperature`` so that a greedy model can answer differently) and finally recorded as a
failure. Only parsable answers are cached, so a rerun sends no request for an answer it has.
The cache namespace is ``score`` (moe-explain uses ``explain``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..llm.base import Accounting, CompletionClient
from ..llm.cache import ResponseCache
from ..llm.exchange import ask, refusing_truncated
from .judge_prompts import build_scorer_messages, parse_answer

CACHE_NAMESPACE = "score"
TRUNCATED = "answer cut off at --max-tokens (finish_reason \"length\"); raise --max-tokens"


@dataclass
class JudgeAccounting(Accounting):
    """The client's counters (``failures``: predictions recorded as failed) plus the predictions made."""

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
        n = len(contexts)
        parse = refusing_truncated(lambda text: parse_answer(text, n), TRUNCATED)
        answer = await ask(self.client, build_scorer_messages(explanation, contexts), parse, attempts=self.attempts,
                           cache=self.cache, retry_temperature=self.retry_temperature, attempt_in_key=True)
        self.accounting.predictions += 1
        chosen = None if answer.value is None else [i + 1 in answer.value for i in range(n)]
        return Prediction(chosen, error=answer.error, attempts=answer.attempts, requests=answer.requests,
                          cache_hits=answer.cache_hits, raw=answer.raw)


__all__ = ["CACHE_NAMESPACE", "JudgeAccounting", "LLMScorer", "Prediction"]
