"""``openai``: any OpenAI-compatible chat-completions endpoint through httpx (async).

vLLM, llama.cpp's server, Ollama and hosted APIs all answer ``POST
{api_base}/chat/completions``. Up to ``concurrency`` requests are in flight, fewer
while the server is slow: a request that times out halves the number allowed in
flight and each run of that many answers in time raises it by one again (AIMD), so
a server that works one request at a time is not buried in retries. A global
``rate`` (requests per second) spaces request starts. Connecting and reading have
separate timeouts (``connect_timeout``, ``timeout``): an unreachable server fails in
seconds, a busy one gets its time. Retried, with exponential backoff and jitter
(``base * 2**attempt``, capped, times a random factor in [0.5, 1]), up to
``max_retries`` times: HTTP 408, 409, 425, 429 and 5xx, timeouts, connection errors
(refused, reset, dropped mid-response) and bodies that are not a chat completion.
``Retry-After`` (seconds or an HTTP date) is honoured as the least wait. 401, 403
and 404 stop the run: every other request would fail alike, so none is sent after one. With
``continue_final_message`` an ``answer_prefix`` is sent as a final assistant
message for the server to continue (vLLM's extension of the same name); the
answer's text then starts with the prefix.

Before any work (:meth:`OpenAIClient.prepare`) the client asks ``GET
{api_base}/models``: a server that cannot be reached stops the run there, and
without ``model`` the server must name exactly one model (for a server given by
``api_base``; the default endpoint's default model is ``gpt-4o-mini``).

The key comes from the environment variable named by ``api_key_env`` (default
``OPENAI_API_KEY``); it is only ever put in the ``Authorization`` header: never in
a message, a log line, a record or the cache.
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
import urllib.parse
from dataclasses import dataclass

import httpx

# httpcore tries `import sniffio` on every lock it makes; when sniffio is not installed each try
# scans sys.path again (~0.4 ms, thousands of times per run). Recording it as absent makes the
# failing import instant and changes nothing else (httpcore then assumes asyncio, as it would).
if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None

from ..errors import UsageError
from .base import (
    BackendError,
    Completion,
    CompletionClient,
    FatalBackendError,
    GenerationOptions,
    Usage,
    option,
    require,
)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
FATAL_STATUS = {401: "the API key was refused (401)", 403: "access denied (403)",
                404: "no such endpoint or model (404)"}
DEFAULT_API_BASE = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"  # only for DEFAULT_API_BASE; any other server must say which model
MAX_RETRY_AFTER = 300.0
CONNECTIONS_PER_CLIENT = 8


@dataclass
class OpenAIOptions(GenerationOptions):
    """Options of the ``openai`` backend (defaults and checks live here and nowhere else)."""

    api_base: str | None = option(None, f"base URL of the endpoint (default: $OPENAI_BASE_URL or {DEFAULT_API_BASE})")
    api_key_env: str = option("OPENAI_API_KEY", "environment variable holding the API key (never printed or stored)")
    concurrency: int = option(16, "most requests in flight (fewer while the server times out)")
    rate: float = option(0.0, "most requests started per second (0: no limit)")
    timeout: float = option(120.0, "seconds to wait for an answer once connected (read timeout)")
    connect_timeout: float = option(10.0, "seconds to wait for a connection")
    max_retries: int = option(6, "retries of a request on 429/5xx/timeouts/connection errors/bad JSON")
    backoff_base: float = option(0.5, "first retry waits about this many seconds, doubling each time (jitter)")
    backoff_cap: float = option(30.0, "longest wait between retries, in seconds")
    continue_final_message: bool = option(False, "let the server continue the answer's start, sent as a final "
                                                 "assistant message (vLLM's continue_final_message; small models "
                                                 "answer in form far more often)")

    @property
    def endpoint(self) -> str:
        return (self.api_base or os.environ.get("OPENAI_BASE_URL") or DEFAULT_API_BASE).rstrip("/")

    def check(self) -> None:
        super().check()
        require(self.concurrency >= 1, f"--concurrency must be >= 1 (got {self.concurrency})")
        require(self.rate >= 0, f"--rate must be >= 0 (got {self.rate})")
        require(self.timeout > 0 and self.connect_timeout > 0, "--timeout and --connect-timeout must be > 0")
        require(self.max_retries >= 0 and self.backoff_base >= 0 and self.backoff_cap >= 0,
                "--max-retries, --backoff-base and --backoff-cap must be >= 0")
        url = urllib.parse.urlsplit(self.endpoint)
        require(url.scheme in ("http", "https") and bool(url.hostname),
                f"--api-base {self.endpoint!r} is not an http(s) URL (e.g. http://localhost:8000/v1)")
        if self.endpoint == DEFAULT_API_BASE and not os.environ.get(self.api_key_env):
            raise UsageError(f"no API key in ${self.api_key_env} for {DEFAULT_API_BASE}; give --api-base for a "
                             "local server, or use --backend offline for labels without an LLM")


class RateLimiter:
    """At most ``rate`` request starts per second across the whole run (0 = unlimited).

    ``clock`` (seconds, monotonic) and ``sleep`` are the limiter's own: the schedule it
    keeps is on that clock, so a test can give it a manual one and check the schedule exactly.
    """

    def __init__(self, rate: float, *, clock=time.monotonic, sleep=asyncio.sleep):
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self.clock = clock
        self.sleep = sleep
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> float | None:
        """Wait for this request's turn; its start time on ``clock`` (None when unlimited)."""
        if not self.interval:
            return None
        async with self._lock:
            now = self.clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            await self.sleep(start - now)
        return start


class AdaptiveLimit:
    """Requests allowed in flight: halved on a timeout, +1 after ``limit`` answers in time (AIMD)."""

    def __init__(self, most: int):
        self.most = max(1, most)
        self.limit = self.most
        self.in_flight = 0
        self._in_time = 0
        self._changed = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    async def release(self, timed_out: bool = False) -> None:
        async with self._changed:
            self.in_flight -= 1
            if timed_out:
                self.limit, self._in_time = max(1, self.limit // 2), 0
            else:
                self._in_time += 1
                if self._in_time >= self.limit and self.limit < self.most:
                    self.limit, self._in_time = self.limit + 1, 0
            self._changed.notify_all()


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """The wait a ``Retry-After`` header asks for (delta-seconds or HTTP date), or None; ``now`` is the
    clock an HTTP date is measured from (default: ``time.time()``)."""
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
    return max(0.0, min(when.timestamp() - (time.time() if now is None else now), MAX_RETRY_AFTER))


def backoff_seconds(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter; never less than what the server asked for."""
    delay = min(cap, base * (2 ** attempt)) * random.uniform(0.5, 1.0)
    return max(delay, retry_after) if retry_after is not None else delay


def completion_from_body(body: bytes) -> Completion:
    """The answer in a chat-completions response body; ValueError/TypeError when it is not one."""
    data = json.loads(body)
    if not isinstance(data, dict):
        raise TypeError("response is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("response has no choices")
    choice = choices[0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if content is None:
        content = choice.get("text")  # some servers answer in the completions shape
    if not isinstance(content, str):
        raise TypeError("response has no message content")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    reason = choice.get("finish_reason")
    return Completion(text=content, finish_reason=reason if isinstance(reason, str) else None,
                      usage=Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)))


class OpenAIClient(CompletionClient):
    """An OpenAI-compatible chat-completions endpoint (see the module docstring)."""

    options_class = OpenAIOptions
    summary = "any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, Ollama, hosted APIs)"
    options: OpenAIOptions

    def __init__(self, options, accounting=None):
        super().__init__(options, accounting)
        self.supports_prefix = options.continue_final_message
        self.api_base = options.endpoint
        self.limiter = RateLimiter(options.rate)
        self._headers = {"Content-Type": "application/json"}
        key = os.environ.get(options.api_key_env)
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._model = options.model or (DEFAULT_MODEL if self.api_base == DEFAULT_API_BASE else None)
        self._clients: list[httpx.AsyncClient] = []
        self._slots: AdaptiveLimit | None = None
        self._tls = None  # one TLS context for every pool (loading the CA bundle costs ~80 ms each time)
        self._fatal: FatalBackendError | None = None  # once set, no further request is sent

    def _tls_context(self):
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return self._tls

    @property
    def model(self) -> str | None:
        return self._model

    @property
    def concurrency(self) -> int:
        return self.options.concurrency

    def identity(self) -> dict:
        return {"backend": self.name, "endpoint": self.api_base, "model": self.model}

    def label(self) -> dict:
        return {"backend": self.name, "model": self.model, "method": "chat-completions"}

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.options.timeout, connect=self.options.connect_timeout, pool=None)

    def prepare(self) -> None:
        """Reach the server (exit 1 when it cannot be reached) and find the model when none was given (exit 2)."""
        try:
            response = httpx.get(f"{self.api_base}/models", headers=self._headers, follow_redirects=False,
                                 verify=self._tls_context(),
                                 timeout=httpx.Timeout(min(self.options.timeout, 30.0),
                                                       connect=self.options.connect_timeout))
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as error:
            raise FatalBackendError(f"cannot reach {self.api_base} ({type(error).__name__}: "
                                    f"{self._redact(str(error)) or 'no answer'}); is the server running and "
                                    "--api-base right?") from None
        except httpx.HTTPError:
            response = None  # reachable but slow or odd: the requests themselves will tell
        if response is not None and response.status_code in (401, 403):
            raise FatalBackendError(f"{self.api_base}: {FATAL_STATUS[response.status_code]}; check the key in "
                                    f"${self.options.api_key_env}")
        if self._model is not None:
            return
        names = []
        if response is not None and response.status_code == 200:
            try:
                names = [str(entry["id"]) for entry in response.json().get("data", [])]
            except (ValueError, TypeError, KeyError, AttributeError):
                names = []
        if len(names) != 1:
            listed = f"it lists {len(names)}: {', '.join(names[:8])}" if names else "it lists none at /models"
            raise UsageError(f"--model is required with --api-base {self.api_base} ({listed})")
        self._model = names[0]

    def advice(self, kind: str) -> str | None:
        if kind == "timeout":
            return (f"the server answers slower than --timeout {self.options.timeout:g} s; try --concurrency 1 "
                    f"--timeout {max(300, 4 * self.options.timeout):g}")
        if kind == "connection":
            return f"connections to {self.api_base} failed; check that the server is up and --api-base"
        if kind == "http":
            return "the server refused requests (see the labels' error); try a lower --concurrency or --rate"
        return None

    async def start(self) -> None:
        if self._model is None:  # prepare() was not called: it finds the model (or says --model is needed)
            await asyncio.to_thread(self.prepare)
        # several small connection pools rather than one big one: httpcore's pool scans all its
        # connections for every request it places, which costs more than the requests themselves at 32+
        concurrency = self.options.concurrency
        sizes = [CONNECTIONS_PER_CLIENT] * (concurrency // CONNECTIONS_PER_CLIENT)
        if concurrency % CONNECTIONS_PER_CLIENT:
            sizes.append(concurrency % CONNECTIONS_PER_CLIENT)
        self._clients = [httpx.AsyncClient(timeout=self._timeout(), headers=self._headers, verify=self._tls_context(),
                                           limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                                           follow_redirects=False) for size in sizes]
        self._client_load = [0] * len(sizes)
        self._slots = AdaptiveLimit(concurrency)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
        self._clients, self._slots = [], None

    async def _post(self, url: str, body: bytes) -> httpx.Response:
        """POST through the least busy pool."""
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

    async def complete(self, messages, *, temperature=None, max_tokens=None, answer_prefix=None) -> Completion:
        if answer_prefix is not None and not self.supports_prefix:
            raise UsageError("the openai backend continues an answer's start only with continue_final_message")
        if self._slots is None:
            await self.start()
        payload = {"model": self.model, "messages": messages, **self.parameters(temperature, max_tokens)}
        if answer_prefix is not None:  # the server continues the assistant's turn (vLLM's extension)
            payload.update(messages=[*messages, {"role": "assistant", "content": answer_prefix}],
                           continue_final_message=True, add_generation_prompt=False)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        url = f"{self.api_base}/chat/completions"
        last_problem, kind = "no attempt made", "http"
        for attempt in range(self.options.max_retries + 1):
            retry_after = None
            await self.limiter.wait()
            await self._slots.acquire()
            if self._fatal is not None:  # another request was refused for good while this one waited
                await self._slots.release()
                raise self._fatal
            self.accounting.requests += 1
            self.accounting.max_in_flight = max(self.accounting.max_in_flight, self._slots.in_flight)
            timed_out = False
            try:
                response = await self._post(url, body)
                status, content = response.status_code, response.content
            except httpx.TimeoutException as error:
                timed_out = not isinstance(error, httpx.ConnectTimeout)
                which = "connecting" if not timed_out else "an answer"
                limit = self.options.connect_timeout if not timed_out else self.options.timeout
                status, content = None, b""
                last_problem, kind = f"timed out after {limit:g} s waiting for {which}", "timeout"
            except httpx.TransportError as error:  # refused, reset, dropped mid-response, bad HTTP
                status, content = None, b""
                last_problem, kind = f"connection error ({type(error).__name__})", "connection"
            finally:
                await self._slots.release(timed_out)
            if status is not None:
                if status == 200:
                    try:
                        completion = completion_from_body(content)
                    except (ValueError, TypeError, AttributeError) as error:
                        last_problem, kind = f"malformed response body ({error})", "malformed"
                    else:
                        completion.usage.requests = attempt + 1
                        if answer_prefix is not None and not completion.text.lstrip().startswith(answer_prefix):
                            completion.text = answer_prefix + completion.text
                        self.accounting.add_usage(completion.usage)
                        return completion
                elif status in FATAL_STATUS:
                    self._fatal = FatalBackendError(f"{self.api_base}: {FATAL_STATUS[status]}; check --api-base, "
                                                    f"--model and the key in ${self.options.api_key_env}")
                    raise self._fatal
                elif status in RETRY_STATUS or status >= 500:
                    last_problem, kind = f"HTTP {status}", "http"
                    retry_after = retry_after_seconds(response.headers.get("retry-after"))
                else:
                    raise BackendError(self._redact(f"HTTP {status}: {content[:200].decode('utf-8', 'replace')}"),
                                       "http", attempt + 1)
            if attempt == self.options.max_retries:
                break
            self.accounting.retries += 1
            await asyncio.sleep(backoff_seconds(attempt, self.options.backoff_base, self.options.backoff_cap,
                                                retry_after))
        raise BackendError(f"{last_problem} ({self.options.max_retries + 1} attempts)", kind,
                           self.options.max_retries + 1)
