"""One LLM exchange: send a prompt, parse the answer, ask again with the reason, cache, record the failure.

Every tool that asks a language model goes through :func:`ask` (moe-explain's labels, moe-score's
judge, moe-probe causal's triggers and targets)::

    from moetools.llm import ResponseCache, ask, make_client

    client = make_client("openai", {"api_base": URL, "model": NAME})
    answer = await ask(client, messages, parse, attempts=3, cache=ResponseCache(namespace="score"))
    answer.value          # what ``parse`` made of the answer, or None when every attempt failed
    answer.error, answer.kind, answer.raw     # why not: the parser's reason ("answer"), "length", or
                                              # a BackendError's kind; the last unparsable text
    answer.attempts, answer.requests, answer.cache_hits, answer.prompt_tokens, answer.completion_tokens

``parse(completion) -> (value, None) | (None, why)`` decides what is an answer; a completion cut off
at ``max_tokens`` is the parser's to take or refuse (:func:`refusing_truncated` refuses it). An answer
that does not parse is asked again, ``attempts`` in all: with ``reask(messages, text, why)`` the next
prompt carries the reason (moe-probe causal), otherwise the same prompt is sent again, from the
second attempt with at least ``retry_temperature`` so that a greedy model can answer otherwise
(moe-explain, the judge). A :class:`BackendError` (the transport already retried) ends the exchange
as failed; a :class:`FatalBackendError` is raised.

Cut off: an answer that ended at the token limit (``finish_reason`` "length"; the ``local`` backend
says the same when it generated ``max_tokens`` tokens without an end-of-sequence) and that the parser
refused is asked again once, the same prompt and attempt, with the limit raised to
:func:`longer_limit` (doubled, at most :data:`LONGEST_ANSWER` tokens); later attempts keep the raised
limit. Only then does a cut-off answer count as failed (kind ``"length"``). ``answer.max_tokens`` is
the limit of the last request (None: the client's own). :func:`exchange` does this when given
``max_tokens`` (its ``send`` and ``key`` then take ``max_tokens=`` too); :func:`ask` always does.

Cache: the key is the request's identity (:meth:`CompletionClient.request_identity`: backend,
endpoint, model, the messages, the generation parameters), plus ``"attempt"`` when
``attempt_in_key`` (a re-asked prompt is sampled again, not replayed). The cache holds the raw
answer text and only answers the parser takes; a stored answer is parsed again when it is read and
served only if the parser still takes it, so a changed parser never serves a stale verdict and no
parser version is needed in the key (keys are those written before this module existed).

The accounting (``accounting`` or the client's) counts cache hits, re-asked answers
(``answer_retries``), answers asked again with a larger limit (``length_retries``) and failed
exchanges (``failures``). Methods that are not completion clients
(moe-explain's ``self`` and ``offline``) use :func:`exchange`, the same loop with their own ``send``
and cache ``key``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .base import Accounting, BackendError, Completion, CompletionClient
from .cache import ResponseCache, through_cache

#: ``parse(completion) -> (value, None)`` or ``(None, why it is not an answer)``
Parser = Callable[[Completion], tuple[Any, str | None]]
#: ``reask(messages, answer text, why) -> the messages of the next attempt``
Reasker = Callable[[list[dict], str, str], list[dict]]

#: the most tokens a cut-off answer is asked again with (a label is one sentence, a judgement a short list)
LONGEST_ANSWER = 1024
#: a cut-off answer is asked again once with its limit times this
LENGTH_GROWTH = 2


def longer_limit(max_tokens: int) -> int | None:
    """The limit a cut-off answer is asked again with: doubled, at most LONGEST_ANSWER; None when not larger."""
    longer = min(LENGTH_GROWTH * int(max_tokens), LONGEST_ANSWER)
    return longer if longer > max_tokens else None


@dataclass
class Answer:
    """The outcome of one exchange (see the module docstring)."""

    value: Any = None
    error: str | None = None
    kind: str | None = None          # None, "answer" (did not parse), "length" (cut off) or a BackendError kind
    raw: str | None = None           # the last answer that did not parse
    completion: Completion | None = None   # the answer taken
    messages: list[dict] = field(default_factory=list)   # the prompt last sent
    attempts: int = 0
    requests: int = 0
    max_tokens: int | None = None    # the token limit of the last request (None: the client's own)
    longer: bool = False             # a cut-off answer was asked again with a larger limit
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.value is not None


def refusing_truncated(parse: Callable[[str], tuple[Any, str | None]], why: str) -> Parser:
    """A parser of completions: ``parse(text)``, except that an answer cut off at ``max_tokens`` is refused."""

    def parse_completion(completion: Completion) -> tuple[Any, str | None]:
        if completion.truncated:
            return None, why
        return parse(completion.text)

    return parse_completion


async def exchange(send: Callable[..., Awaitable[Completion]], messages: list[dict], parse: Parser, *,
                   attempts: int = 1, cache: ResponseCache | None = None,
                   key: Callable[..., dict] | None = None, reask: Reasker | None = None,
                   accounting: Accounting | None = None, max_tokens: int | None = None) -> Answer:
    """:func:`ask` with the sending and the cache key given: ``send(messages, attempt)``, ``key(messages, attempt)``.

    With ``max_tokens`` (the limit the requests are sent with) a refused cut-off answer is asked again
    once with :func:`longer_limit`; ``send`` and ``key`` are then called with ``max_tokens=`` as well.
    """
    answer = Answer(messages=messages)
    limit = None                       # None: the caller's own limit; set once a cut-off answer raised it

    def accept(completion: Completion) -> bool:
        return parse(completion)[0] is not None

    def limited(call: Callable, *arguments):
        return call(*arguments) if max_tokens is None else call(*arguments, max_tokens=limit or max_tokens)

    async def one(messages: list[dict], attempt: int) -> tuple[Completion | None, Any, str | None]:
        identity = limited(key, messages, attempt) if cache is not None and key is not None else None
        try:
            completion = await through_cache(cache, identity, lambda: limited(send, messages, attempt),
                                             accept=accept, accounting=accounting)
        except BackendError as error:
            answer.requests += error.requests
            answer.error, answer.kind, answer.raw = str(error), error.kind, None
            return None, None, None    # the client already retried the transport
        answer.requests += completion.usage.requests
        answer.cache_hits += int(completion.cached)
        answer.prompt_tokens += completion.usage.prompt_tokens
        answer.completion_tokens += completion.usage.completion_tokens
        value, why = parse(completion)
        return completion, value, why

    for attempt in range(max(1, attempts)):
        answer.attempts, answer.messages = attempt + 1, messages
        if attempt and accounting is not None:
            accounting.answer_retries += 1
        completion, value, why = await one(messages, attempt)
        if completion is not None and value is None and completion.truncated and max_tokens is not None \
                and limit is None and longer_limit(max_tokens) is not None:
            limit, answer.longer = longer_limit(max_tokens), True      # once per exchange: ask with more room
            if accounting is not None:
                accounting.length_retries += 1
            completion, value, why = await one(messages, attempt)
        answer.max_tokens = limit or max_tokens
        if completion is None:
            break
        if value is not None:
            answer.value, answer.completion, answer.error, answer.kind, answer.raw = value, completion, None, None, None
            break
        answer.error, answer.raw = why, completion.text
        answer.kind = "length" if completion.truncated else "answer"
        if reask is not None and attempt + 1 < attempts:
            messages = reask(messages, completion.text, why)
    if answer.value is None and accounting is not None:
        accounting.failures += 1
    return answer


async def ask(client: CompletionClient, messages: list[dict], parse: Parser, *, attempts: int = 1,
              cache: ResponseCache | None = None, reask: Reasker | None = None,
              retry_temperature: float | None = None, answer_prefix: str | None = None,
              attempt_in_key: bool = False, accounting: Accounting | None = None) -> Answer:
    """One exchange with ``client`` (see the module docstring); the client's accounting unless ``accounting``."""

    def parameters(attempt: int, max_tokens: int) -> dict:
        temperature = None
        if attempt and retry_temperature is not None:
            temperature = max(client.options.temperature, retry_temperature)
        return {"temperature": temperature, "answer_prefix": answer_prefix, "max_tokens": max_tokens}

    def send(messages: list[dict], attempt: int, max_tokens: int) -> Awaitable[Completion]:
        return client.complete(messages, **parameters(attempt, max_tokens))

    def key(messages: list[dict], attempt: int, max_tokens: int) -> dict:
        identity = client.request_identity(messages, **parameters(attempt, max_tokens))
        if attempt_in_key:
            identity["attempt"] = attempt
        return identity

    return await exchange(send, messages, parse, attempts=attempts, cache=cache, key=key, reask=reask,
                          accounting=client.accounting if accounting is None else accounting,
                          max_tokens=client.options.max_tokens)


async def ask_all(client: CompletionClient, prompts: Iterable[list[dict]], parse: Parser, **kwargs) -> list[Answer]:
    """:func:`ask` for every prompt at once (the client bounds its requests in flight); starts and closes it."""
    await client.start()
    try:
        return list(await asyncio.gather(*(ask(client, messages, parse, **kwargs) for messages in prompts)))
    finally:
        await client.aclose()


def ask_batch(client: CompletionClient, prompts: Iterable[list[dict]], parse: Parser, **kwargs) -> list[Answer]:
    """:func:`ask_all` on a fresh event loop (for code that is not async)."""
    return asyncio.run(ask_all(client, list(prompts), parse, **kwargs))


__all__ = ["LENGTH_GROWTH", "LONGEST_ANSWER", "Answer", "Parser", "Reasker", "ask", "ask_all", "ask_batch",
           "exchange", "longer_limit", "refusing_truncated"]
