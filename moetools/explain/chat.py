"""The LLM-prompted explainer: the paper's chat prompt sent through any :mod:`moetools.llm` client.

The runner builds P_mono or P_domain(d) (:mod:`moetools.explain.prompts`); this
method sends it, greedy at the client's temperature, and on a retry after an
answer that was not a label with at least ``retry_temperature``. Clients that can
pre-fill the answer (``local``) start it with "This expert specializes in" (the
form the prompt asks for; small models need it). An answer the server cut off at
``max_tokens`` before its first sentence ended is asked again once with a larger limit
(:func:`moetools.llm.exchange.longer_limit`) and then, still cut off, is not a label.
"""

from __future__ import annotations

from ..llm.base import BackendError, Completion, CompletionClient
from ..llm.exchange import longer_limit
from .method import Explainer, ExplainJob
from .parse import check_explanation

ANSWER_PREFIX = "This expert specializes in"


class LLMExplainer(Explainer):
    """See the module docstring; ``name`` is the client's backend name."""

    uses_chat_prompt = True

    def __init__(self, client: CompletionClient, accounting):
        super().__init__(client.options, accounting)
        self.client = client
        client.accounting = accounting  # one set of counters for the run
        self.name = client.name
        self.summary = client.summary

    @property
    def model(self) -> str | None:
        return self.client.model

    @property
    def concurrency(self) -> int:
        return self.client.concurrency

    @property
    def max_tokens(self) -> int:
        return self.client.options.max_tokens

    @property
    def answer_prefix(self) -> str | None:
        return ANSWER_PREFIX if self.client.supports_prefix else None

    def identity(self) -> dict:
        return self.client.label()

    def prepare(self) -> None:
        self.client.prepare()

    def _parameters(self, job: ExplainJob) -> dict:
        temperature = None
        if job.attempt > 0:  # an answer that was not a label: ask again with some sampling
            temperature = max(self.client.options.temperature, self.settings.retry_temperature)
        return {"temperature": temperature, "answer_prefix": self.answer_prefix, "max_tokens": job.max_tokens}

    def request_identity(self, job: ExplainJob) -> dict:
        identity = self.client.request_identity(job.messages, **self._parameters(job))
        identity["attempt"] = job.attempt
        return identity

    def interpret(self, completion: Completion) -> tuple[str | None, str | None]:
        label, why = check_explanation(completion.text, truncated=completion.truncated)
        if label is None and completion.truncated and "finish_reason" not in why:
            why += " (cut off at --max-tokens: finish_reason \"length\")"
        return label, why

    def advice(self, kind: str) -> str | None:
        if kind == "length":
            limit = self.client.options.max_tokens
            longer = longer_limit(limit)
            again = f" and again at {longer} when asked once more" if longer else ""
            return f"answers were cut off at --max-tokens {limit}{again}; raise --max-tokens"
        if kind == "answer":
            return "the model did not answer with a usable label (see 'raw'); try more --attempts or a larger model"
        return self.client.advice(kind)

    async def start(self) -> None:
        await self.client.start()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def complete(self, job: ExplainJob) -> Completion:
        try:
            completion = await self.client.complete(job.messages, **self._parameters(job))
        except BackendError as error:
            job.requests += error.requests
            raise
        job.requests += completion.usage.requests
        return completion
