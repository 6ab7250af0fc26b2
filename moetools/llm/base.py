"""What every explainer backend implements, and what it gets and returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import MoetoolsError


class BackendError(MoetoolsError):
    """A request that failed after its retries (the expert is recorded as failed; the run goes on)."""


class FatalBackendError(MoetoolsError):
    """A failure no other expert can escape (bad key, unknown model, wrong URL): the run stops."""


@dataclass
class Accounting:
    """Counters for the end-of-run line and the end record (shared by runner and backend)."""

    requests: int = 0          # requests actually sent (HTTP requests, generate calls), retries included
    cache_hits: int = 0
    retries: int = 0           # transport-level retries (429, 5xx, timeouts, dropped connections, bad JSON)
    answer_retries: int = 0    # answers that did not parse and were asked again
    failures: int = 0          # experts recorded as failed
    no_examples: int = 0       # of those, experts with nothing to explain (no activating examples)
    labelled: int = 0          # experts labelled in this run
    skipped: int = 0           # experts already labelled in the output (resume)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    max_in_flight: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def line(self, seconds: float) -> str:
        tokens = self.prompt_tokens + self.completion_tokens
        nothing = f" ({self.no_examples} with no examples)" if self.no_examples else ""
        return (f"{self.labelled} labelled, {self.failures} failed{nothing}, {self.skipped} already done; "
                f"requests {self.requests}, cache hits {self.cache_hits}, retries {self.retries + self.answer_retries}, "
                f"failures {self.failures}, tokens {tokens} (prompt {self.prompt_tokens}, "
                f"completion {self.completion_tokens}); {seconds:.1f} s")


@dataclass
class Completion:
    """One answer from a backend."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: backend-specific evidence copied into the label record (e.g. the offline method's statistics)
    details: dict | None = None


@dataclass
class ExplainJob:
    """What a backend is asked about one expert.

    Chat backends read ``messages`` (the paper's prompt, already filled in);
    backends that work from the activations themselves (``self``, ``offline``)
    read ``examples`` (the contexts shown, in order of activation) and ``record``.
    """

    layer: int
    expert: int
    messages: list[dict]
    examples: list[dict]
    record: dict = field(repr=False, default_factory=dict)
    attempt: int = 0
    #: requests the backend sent for this job (retries included); backends add to it
    requests: int = 0


class Explainer:
    """Base class of a backend; subclasses override :meth:`complete` (async).

    ``options`` holds every moe-explain option (``model``, ``api_base``,
    ``concurrency``, ``temperature``, ``max_tokens``, ...); a backend reads what it
    needs. Class attributes tell the runner how to drive it.
    """

    name = "?"
    #: responses may be stored in and served from the response cache
    cacheable = True
    #: the backend answers the paper's chat prompt (so prompt kind mono/domain applies)
    uses_chat_prompt = True
    #: answers are deterministic: a malformed one is not asked again
    deterministic = False
    #: the backend needs every record before the first answer (see offline)
    needs_corpus_pass = False

    def __init__(self, options: dict, accounting: Accounting):
        self.options = options
        self.accounting = accounting

    @property
    def model(self) -> str | None:
        return self.options.get("model")

    @property
    def concurrency(self) -> int:
        return int(self.options.get("concurrency") or 1)

    def identity(self) -> dict:
        """``explainer`` field of the label records: backend, model, method."""
        return {"backend": self.name, "model": self.model, "method": None}

    def parameters(self, job: ExplainJob) -> dict:
        """Generation parameters that change the answer (part of the cache key)."""
        temperature = float(self.options.get("temperature") or 0.0)
        if job.attempt > 0:  # a malformed answer: ask again with some sampling
            temperature = max(temperature, float(self.options.get("retry_temperature") or 0.7))
        return {"temperature": temperature, "max_tokens": int(self.options.get("max_tokens") or 64),
                "attempt": job.attempt if self.deterministic is False and job.attempt > 0 else 0}

    def request_identity(self, job: ExplainJob) -> dict:
        """Everything the answer depends on: the response cache key (never a secret)."""
        return {"backend": self.name, "model": self.model, "messages": job.messages,
                "parameters": self.parameters(job)}

    def parse(self, text: str) -> str | None:
        from ..explain.parse import parse_explanation

        return parse_explanation(text)

    async def start(self) -> None:
        """Called once before the first request (load a model, open a client)."""

    async def complete(self, job: ExplainJob) -> Completion:  # pragma: no cover - interface
        raise NotImplementedError

    async def aclose(self) -> None:
        """Called once at the end, also after an error or Ctrl-C."""
