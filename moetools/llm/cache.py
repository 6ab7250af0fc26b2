"""The on-disk response cache: one JSON file per request, keyed by everything the answer depends on.

Key: SHA-256 of the canonical JSON of a request identity
(:meth:`moetools.llm.CompletionClient.request_identity`): the client's identity
— backend, endpoint (for a server) and model, so another server's answers are
never served — the messages and the generation parameters. No secret is ever
part of it: the API key is neither in the key nor in the file.

Only answers the caller accepts are stored (``accept``), and a stored answer the
caller no longer accepts is not served: a malformed answer is asked again on the
next run instead of being replayed.

Layout: ``CACHE_DIR/NAMESPACE/ab/abcdef....json`` (namespace ``explain`` for
moe-explain) holding ``{"key", "request", "response": {"text", "finish_reason",
"prompt_tokens", "completion_tokens", "details"}, "created"}``. Writes are atomic
(temporary file in the same directory, then ``os.replace``), so a killed run
leaves either the whole entry or none, and runs sharing a cache never read half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..streams import strict_json
from .base import Accounting, Completion, Usage


def default_cache_dir() -> Path:
    """``$MOETOOLS_HOME/cache``, with ``MOETOOLS_HOME`` defaulting to ``~/.cache/moetools``."""
    home = os.environ.get("MOETOOLS_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "moetools")
    return Path(home) / "cache"


def request_key(identity: dict) -> str:
    canonical = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """Get and put answers by request identity; ``enabled=False`` makes it a no-op, ``read=False`` write-only."""

    def __init__(self, root: str | os.PathLike | None = None, *, namespace: str = "explain", enabled: bool = True,
                 read: bool = True):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled
        self.read = read
        self.directory = self.root / namespace

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, identity: dict) -> Completion | None:
        if not (self.enabled and self.read):
            return None
        path = self._path(request_key(identity))
        try:
            response = json.loads(path.read_text(encoding="utf-8"))["response"]
            return Completion(text=str(response["text"]), finish_reason=response.get("finish_reason"),
                              usage=Usage(int(response.get("prompt_tokens", 0)),
                                          int(response.get("completion_tokens", 0)), requests=0),
                              cached=True, details=response.get("details"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a damaged entry counts as missing and is overwritten

    def put(self, identity: dict, completion: Completion) -> None:
        if not self.enabled:
            return
        key = request_key(identity)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"key": key, "request": identity, "created": time.time(),
                 "response": {"text": completion.text, "finish_reason": completion.finish_reason,
                              "prompt_tokens": completion.usage.prompt_tokens,
                              "completion_tokens": completion.usage.completion_tokens,
                              "details": completion.details}}
        handle, temporary = tempfile.mkstemp(prefix=f".{key[:8]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(strict_json.dumps(entry, ensure_ascii=False))
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


def response_cache(cache_dir: str | os.PathLike | None, namespace: str, *, no_cache: bool = False,
                   refresh: bool = False) -> ResponseCache:
    """The cache of a tool's ``--cache-dir``, ``--no-cache`` (neither read nor write) and ``--refresh`` (write only)."""
    return ResponseCache(cache_dir, namespace=namespace, enabled=not no_cache, read=not refresh)


async def through_cache(cache: ResponseCache | None, identity: dict | None,
                        produce: Callable[[], Awaitable[Completion]], *,
                        accept: Callable[[Completion], bool] | None = None,
                        accounting: Accounting | None = None) -> Completion:
    """The cached answer to ``identity`` when there is one ``accept`` takes, else ``produce()``'s (stored if accepted)."""
    if cache is None or identity is None:
        return await produce()
    cached = cache.get(identity)
    if cached is not None and (accept is None or accept(cached)):
        if accounting is not None:
            accounting.cache_hits += 1
        return cached
    completion = await produce()
    if accept is None or accept(completion):
        cache.put(identity, completion)
    return completion
