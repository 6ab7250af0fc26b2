"""The LLM scorer: paper 000's A.2 prompt through any :mod:`moetools.llm` client, cached, re-asked when unparsable.

One exchange (:func:`moetools.llm.exchange.ask`) per (label, order of the samples): the answer is parsed by
:func:`moetools.score.judge.prompts.parse_answer`; an answer that is not a list of valid numbers or
"None" (or one cut off at ``max_tokens``) is asked again (``attempts`` in all; from the second attempt with at least
``retry_temperature`` so that a greedy model can answer differently) and finally recorded as a
failure. Only parsable answers are cached, so a rerun sends no request for an answer it has.
The cache namespace is ``score`` (moe-explain uses ``explain``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ...llm.base import Accounting, CompletionClient
from ...llm.cache import ResponseCache
from ...llm.exchange import ask, refusing_truncated
from .prompts import (
    YES_NO_DESCRIPTION,
    build_scorer_messages,
    build_yes_no_messages,
    parse_answer,
    parse_yes_no,
)

#: how the scorer is asked: paper 000's A.2 list (default) or one yes/no question per sample
JUDGE_PROMPTS = ("paper", "yes-no")

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
                 retry_temperature: float = 0.7, form: str = "paper"):
        self.client = client
        self.accounting = JudgeAccounting()
        client.accounting = self.accounting        # one set of counters for the run
        self.cache = cache
        self.attempts = max(1, attempts)
        self.retry_temperature = retry_temperature
        self.form = form

    def describe(self) -> dict:
        if self.form == "yes-no":
            return {"kind": "llm", **self.client.label(), "prompt": YES_NO_DESCRIPTION, "form": "yes-no"}
        return {"kind": "llm", **self.client.label(), "prompt": "paper 000 appendix A.2"}

    def prepare(self) -> None:
        self.client.prepare()

    async def start(self) -> None:
        await self.client.start()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def predict(self, explanation: str, contexts: list[dict], fit=None) -> Prediction:
        if self.form == "yes-no":
            return await self._predict_yes_no(explanation, contexts)
        n = len(contexts)
        parse = refusing_truncated(lambda text: parse_answer(text, n), TRUNCATED)
        answer = await ask(self.client, build_scorer_messages(explanation, contexts), parse, attempts=self.attempts,
                           cache=self.cache, retry_temperature=self.retry_temperature, attempt_in_key=True)
        self.accounting.predictions += 1
        chosen = None if answer.value is None else [i + 1 in answer.value for i in range(n)]
        return Prediction(chosen, error=answer.error, attempts=answer.attempts, requests=answer.requests,
                          cache_hits=answer.cache_hits, raw=answer.raw)


    async def _predict_yes_no(self, explanation: str, contexts: list[dict]) -> Prediction:
        """One question per sample; the prediction fails when any of them got no yes or no.

        An answer cut off at ``max_tokens`` still counts when its first word is yes or no (small models go
        on explaining: "No. The description does not fit the text. The ..."): that word is the answer.
        """
        def parse(completion):
            return parse_yes_no(completion.text)

        answers = await asyncio.gather(*(
            ask(self.client, build_yes_no_messages(explanation, context), parse, attempts=self.attempts,
                cache=self.cache, retry_temperature=self.retry_temperature, attempt_in_key=True)
            for context in contexts))
        self.accounting.predictions += 1
        failed = next((answer for answer in answers if answer.value is None), None)
        chosen = None if failed is not None else [bool(answer.value) for answer in answers]
        return Prediction(chosen, error=None if failed is None else failed.error,
                          attempts=max((answer.attempts for answer in answers), default=0),
                          requests=sum(answer.requests for answer in answers),
                          cache_hits=sum(answer.cache_hits for answer in answers),
                          raw=None if failed is None else failed.raw)


__all__ = ["CACHE_NAMESPACE", "JUDGE_PROMPTS", "JudgeAccounting", "LLMScorer", "Prediction"]
