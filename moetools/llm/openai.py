"""``openai``: any OpenAI-compatible chat-completions endpoint through httpx (async).

vLLM, llama.cpp's server, Ollama and hosted APIs all answer ``POST
{api_base}/chat/completions``. Up to ``--concurrency`` requests are in flight
(one connection each); a global ``--rate`` (requests per second) spaces their
starts; each request has ``--timeout`` seconds. Retried, with exponential
backoff and full jitter (``base * 2**attempt``, capped, times a random factor in
[0.5, 1]), up to ``--max-retries`` times: HTTP 408, 409, 429 and 5xx, timeouts,
connection errors (refused, reset, dropped mid-response) and bodies that are not
a chat completion. ``Retry-After`` (seconds or an HTTP date) is honoured as the
least wait. 401, 403 and 404 stop the run: every other expert would fail alike.

The key comes from the environment variable named by ``--api-key-env``
(default ``OPENAI_API_KEY``); it is only ever put in the ``Authorization``
header: never in a message, a log line, a record or the cache.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib.util
import json
import os
import random
import sys
import time

import httpx

# httpcore tries `import sniffio` on every lock it makes; when sniffio is not installed each try
# scans sys.path again (~0.4 ms, thousands of times per run). Recording it as absent makes the
# failing import instant and changes nothing else (httpcore then assumes asyncio, as it would).
if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None

from .base import BackendError, Completion, Explainer, ExplainJob, FatalBackendError
from .registry import register_explainer

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
FATAL_STATUS = {401: "the API key was refused (401)", 403: "access denied (403)",
                404: "no such endpoint or model (404)"}
DEFAULT_API_BASE = "https://api.openai.com/v1"
MAX_RETRY_AFTER = 300.0
CONNECTIONS_PER_CLIENT = 8


class RateLimiter:
    """At most ``rate`` request starts per second across the whole run (0 = unlimited)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


def retry_after_seconds(value: str | None) -> float | None:
    """The wait a ``Retry-After`` header asks for (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, min(float(value), MAX_RETRY_AFTER))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, min(when.timestamp() - time.time(), MAX_RETRY_AFTER))


def backoff_seconds(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter; never less than what the server asked for."""
    delay = min(cap, base * (2 ** attempt)) * random.uniform(0.5, 1.0)
    return max(delay, retry_after) if retry_after is not None else delay


def _completion_from_body(body: bytes) -> Completion:
    """The answer in a chat-completions response body; ValueError when it is not one."""
    data = json.loads(body)
    if not isinstance(data, dict):
        raise TypeError("response is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ValueError("response has no choices")
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if content is None and isinstance(choices[0], dict):
        content = choices[0].get("text")  # some servers answer in the completions shape
    if not isinstance(content, str):
        raise TypeError("response has no message content")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Completion(text=content, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                      completion_tokens=int(usage.get("completion_tokens") or 0))


@register_explainer("openai")
class OpenAIExplainer(Explainer):
    """An OpenAI-compatible chat-completions endpoint (see the module docstring)."""

    def __init__(self, options, accounting):
        super().__init__(options, accounting)
        self.api_base = (options.get("api_base") or os.environ.get("OPENAI_BASE_URL")
                         or DEFAULT_API_BASE).rstrip("/")
        self.timeout = float(options.get("timeout") or 60.0)
        self.max_retries = int(options.get("max_retries") if options.get("max_retries") is not None else 6)
        self.backoff_base = float(options["backoff_base"] if options.get("backoff_base") is not None else 0.5)
        self.backoff_cap = float(options.get("backoff_cap") or 30.0)
        self.limiter = RateLimiter(float(options.get("rate") or 0.0))
        key_env = options.get("api_key_env") or "OPENAI_API_KEY"
        self._headers = {"Content-Type": "application/json"}
        key = os.environ.get(key_env)
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._client: httpx.AsyncClient | None = None
        self._in_flight = 0

    @property
    def model(self) -> str | None:
        return self.options.get("model") or "gpt-4o-mini"

    def identity(self) -> dict:
        return {"backend": self.name, "model": self.model, "method": "chat-completions"}

    async def start(self) -> None:
        # several small connection pools rather than one big one: httpcore's pool scans all its
        # connections for every request it places, which costs more than the requests themselves at 32+
        sizes = [CONNECTIONS_PER_CLIENT] * (self.concurrency // CONNECTIONS_PER_CLIENT)
        if self.concurrency % CONNECTIONS_PER_CLIENT:
            sizes.append(self.concurrency % CONNECTIONS_PER_CLIENT)
        self._clients = [httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), headers=self._headers,
                                           limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                                           follow_redirects=False) for size in sizes]
        self._client_load = [0] * len(sizes)
        self._client = True

    async def aclose(self) -> None:
        for client in getattr(self, "_clients", []):
            await client.aclose()
        self._clients, self._client = [], None

    async def _post(self, url: str, body: bytes) -> httpx.Response:
        """POST through the least busy pool (the runner keeps at most ``concurrency`` requests in flight)."""
        index = min(range(len(self._clients)), key=self._client_load.__getitem__)
        self._client_load[index] += 1
        try:
            return await self._clients[index].post(url, content=body)
        finally:
            self._client_load[index] -= 1

    def _redact(self, text: str) -> str:
        """``text`` without the key in it (a server may echo what it was sent)."""
        authorization = self._headers.get("Authorization", "")
        key = authorization[len("Bearer "):] if authorization else ""
        return text.replace(key, "[redacted]") if len(key) >= 4 else text

    def _payload(self, job: ExplainJob) -> bytes:
        parameters = self.parameters(job)
        payload = {"model": self.model, "messages": job.messages, "temperature": parameters["temperature"],
                   "max_tokens": parameters["max_tokens"]}
        return json.dumps(payload, ensure_ascii=False).encode("utf-8")

    async def complete(self, job: ExplainJob) -> Completion:
        if self._client is None:
            await self.start()
        body = self._payload(job)
        url = f"{self.api_base}/chat/completions"
        last_problem = "no attempt made"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            await self.limiter.wait()
            self.accounting.requests += 1
            job.requests += 1
            self._in_flight += 1
            self.accounting.max_in_flight = max(self.accounting.max_in_flight, self._in_flight)
            try:
                response = await self._post(url, body)
                status, content = response.status_code, response.content
            except httpx.TimeoutException:
                status, content, last_problem = None, b"", f"timed out after {self.timeout:g} s"
            except httpx.TransportError as error:  # refused, reset, dropped mid-response, bad HTTP
                status, content, last_problem = None, b"", f"connection error ({type(error).__name__})"
            finally:
                self._in_flight -= 1
            if status is not None:
                if status == 200:
                    try:
                        return _completion_from_body(content)
                    except (ValueError, TypeError, AttributeError) as error:
                        last_problem = f"malformed response body ({error})"
                elif status in FATAL_STATUS:
                    raise FatalBackendError(f"{self.api_base}: {FATAL_STATUS[status]}; check --api-base, "
                                            f"--model and the key in ${self.options.get('api_key_env') or 'OPENAI_API_KEY'}")
                elif status in RETRY_STATUS or status >= 500:
                    last_problem = f"HTTP {status}"
                    retry_after = retry_after_seconds(response.headers.get("retry-after"))
                else:
                    raise BackendError(self._redact(f"HTTP {status}: {content[:200].decode('utf-8', 'replace')}"))
            if attempt == self.max_retries:
                break
            self.accounting.retries += 1
            await asyncio.sleep(backoff_seconds(attempt, self.backoff_base, self.backoff_cap, retry_after))
        raise BackendError(f"{last_problem} ({self.max_retries + 1} attempts)")
