"""Completion clients: chat messages in, answers out, for every tool that asks a language model.

Backends (entry-point group ``moetools.llm_backends``, see :mod:`moetools.llm.registry`):
``openai`` (any OpenAI-compatible chat-completions endpoint: concurrency that backs
off when the server is slow, backoff with jitter, ``Retry-After``, separate connect
and read timeouts, key hygiene) and ``local`` (a transformers causal LM from a
directory or a GGUF file, prompts batched). Each has a typed options dataclass that
owns its defaults and checks (:class:`OpenAIOptions <moetools.llm.openai.OpenAIOptions>`,
:class:`LocalOptions <moetools.llm.local.LocalOptions>`). Prompts and answer parsing
belong to the caller (moe-explain: :mod:`moetools.explain`)::

    from moetools.llm import ResponseCache, ask_batch, make_client

    client = make_client("openai", {"api_base": "http://localhost:8000/v1", "model": "Qwen/Qwen3-8B",
                                    "concurrency": 32, "max_tokens": 16})
    client.prepare()                   # before any work: server reachable? model known? (raises)
    answers = ask_batch(client, prompts, parse, attempts=3, cache=ResponseCache(namespace="score"))
    for answer in answers:             # an Answer: what parse made of it, or why there is none
        answer.value, answer.error, answer.attempts, answer.requests, answer.cache_hits
    client.accounting.as_dict()        # requests, cache_hits, retries, tokens, max_in_flight, failures

One exchange (:func:`ask`, :mod:`moetools.llm.exchange`) sends a prompt, parses the answer with
the caller's parser, asks again (with the reason, or sampling again), caches what parses and
records what failed; moe-explain, moe-score's judge and moe-probe causal all go through it. In
async code: ``await ask(client, messages, parse, ...)`` (any number at once; the client bounds
its requests in flight) between ``await client.start()`` and ``await client.aclose()``, or
``await ask_all(client, prompts, parse)``; ``await client.complete(messages, temperature=,
max_tokens=, answer_prefix=)`` is one bare request.
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
from .cache import ResponseCache, default_cache_dir, through_cache
from .exchange import Answer, ask, ask_all, ask_batch, exchange, refusing_truncated
from .registry import ENTRY_POINT_GROUP, available, client_class, make_client


def backend_table() -> list[dict]:
    """One row per backend: name, package, summary, options ``[(flag, default, help)]``."""
    return [{"name": name, "package": package, "summary": client_class(name).summary,
             "options": client_class(name).options_class.describe()} for name, package in available().items()]


__all__ = [
    "ENTRY_POINT_GROUP",
    "Accounting",
    "Answer",
    "BackendError",
    "Completion",
    "CompletionClient",
    "FatalBackendError",
    "GenerationOptions",
    "Options",
    "ResponseCache",
    "Usage",
    "ask",
    "ask_all",
    "ask_batch",
    "available",
    "backend_table",
    "client_class",
    "default_cache_dir",
    "exchange",
    "make_client",
    "option",
    "refusing_truncated",
    "through_cache",
]
