"""Many requests through one client: bounded concurrency, the response cache, failures kept per request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .base import BackendError, Completion, CompletionClient
from .cache import ResponseCache, through_cache


@dataclass
class Request:
    """One chat request; ``None`` parameters take the client's options."""

    messages: list[dict]
    temperature: float | None = None
    max_tokens: int | None = None
    answer_prefix: str | None = None

    def parameters(self) -> dict:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "answer_prefix": self.answer_prefix}


async def complete_one(client: CompletionClient, request: Request, *, cache: ResponseCache | None = None,
                       accept: Callable[[Completion], bool] | None = None) -> Completion:
    """One answer, from the cache when it holds one ``accept`` takes; raises :class:`BackendError`."""
    parameters = request.parameters()
    identity = client.request_identity(request.messages, **parameters) if cache is not None else None
    return await through_cache(cache, identity, lambda: client.complete(request.messages, **parameters),
                               accept=accept, accounting=client.accounting)


async def complete_all(client: CompletionClient, requests: Iterable[Request], *, cache: ResponseCache | None = None,
                       accept: Callable[[Completion], bool] | None = None) -> list[Completion | BackendError]:
    """Every request's answer (or its :class:`BackendError`), in order; the client bounds requests in flight.

    Starts and closes the client. A :class:`moetools.llm.FatalBackendError` stops everything and is raised.
    """

    async def one(request: Request) -> Completion | BackendError:
        try:
            return await complete_one(client, request, cache=cache, accept=accept)
        except BackendError as error:
            return error

    await client.start()
    try:
        return list(await asyncio.gather(*(one(request) for request in requests)))
    finally:
        await client.aclose()


def complete_batch(client: CompletionClient, requests: Iterable[Request], **kwargs) -> list[Completion | BackendError]:
    """:func:`complete_all` on a fresh event loop (for code that is not async)."""
    return asyncio.run(complete_all(client, list(requests), **kwargs))
