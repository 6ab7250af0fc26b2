"""Completion clients: chat messages in, answers out, for every tool that asks a language model.

Backends (entry-point group ``moetools.llm_backends``, see :mod:`moetools.llm.registry`):
``openai`` (any OpenAI-compatible chat-completions endpoint: concurrency that backs
off when the server is slow, backoff with jitter, ``Retry-After``, separate connect
and read timeouts, key hygiene) and ``local`` (a transformers causal LM from a
directory or a GGUF file, prompts batched). Each has a typed options dataclass that
owns its defaults and checks (:class:`OpenAIOptions <moetools.llm.openai.OpenAIOptions>`,
:class:`LocalOptions <moetools.llm.local.LocalOptions>`). Prompts and answer parsing
belong to the caller (moe-explain: :mod:`moetools.explain`)::

    from moetools.llm import Request, ResponseCache, complete_batch, make_client

    client = make_client("openai", {"api_base": "http://localhost:8000/v1", "model": "Qwen/Qwen3-8B",
                                    "concurrency": 32, "max_tokens": 16})
    client.prepare()                   # before any work: server reachable? model known? (raises)
    answers = complete_batch(client, [Request(messages) for messages in prompts],
                             cache=ResponseCache(namespace="score"), accept=lambda c: not c.truncated)
    for answer in answers:             # a Completion, or the BackendError of a request that failed
        answer.text, answer.finish_reason, answer.usage.prompt_tokens, answer.cached
    client.accounting.as_dict()        # requests, cache_hits, retries, tokens, max_in_flight

In async code: ``await client.start()``, ``await client.complete(messages, temperature=,
max_tokens=, answer_prefix=)`` (any number at once; the client bounds its requests in
flight), ``await client.aclose()``; or ``await complete_all(client, requests)``.
:class:`FatalBackendError` (refused key, unreachable server) means no other request can
succeed: stop. Options by mapping go through ``options_class.from_settings`` (types,
defaults, checks); :func:`backend_table` describes every backend and its options.
"""

from .base import (
    Accounting,
    BackendError,
    Completion,
    CompletionClient,
    FatalBackendError,
    GenerationOptions,
    Options,
    Usage,
    option,
)
from .batch import Request, complete_all, complete_batch, complete_one
from .cache import ResponseCache, default_cache_dir, through_cache
from .registry import ENTRY_POINT_GROUP, available, client_class, make_client


def backend_table() -> list[dict]:
    """One row per backend: name, package, summary, options ``[(flag, default, help)]``."""
    return [{"name": name, "package": package, "summary": client_class(name).summary,
             "options": client_class(name).options_class.describe()} for name, package in available().items()]


__all__ = [
    "ENTRY_POINT_GROUP",
    "Accounting",
    "BackendError",
    "Completion",
    "CompletionClient",
    "FatalBackendError",
    "GenerationOptions",
    "Options",
    "Request",
    "ResponseCache",
    "Usage",
    "available",
    "backend_table",
    "client_class",
    "complete_all",
    "complete_batch",
    "complete_one",
    "default_cache_dir",
    "make_client",
    "option",
    "through_cache",
]
