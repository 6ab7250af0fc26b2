"""What every explainer method implements, what it gets and what it returns.

A method turns one expert's job (its shown contexts, and the chat prompt for
methods that use one) into a :class:`moetools.llm.Completion`; the runner parses,
caches and records it. The built-in methods: the LLM-prompted explainer over any
completion client (:mod:`moetools.explain.chat`), MONET self-explanation
(:mod:`moetools.explain.self_explain`) and the offline statistical summary
(:mod:`moetools.explain.offline`). A method of one's own subclasses
:class:`Explainer` (see :mod:`moetools.explain.registry`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..llm.base import Accounting, Completion, Options, option, require
from .parse import check_explanation

DEFAULT_MAX_EXAMPLES = 20     # paper 002: the top-20 activating sequences per expert
DEFAULT_LOGIT_LENS_TOP = 3    # paper 002: top-3 logit-lens tokens
PROMPT_FORMS = ("paper", "compact")


@dataclass
class ExplainSettings(Options):
    """What moe-explain asks of every method, whatever the backend."""

    max_examples: int = option(DEFAULT_MAX_EXAMPLES, "contexts shown per expert (top + weighted, strongest first)")
    logit_lens_top: int = option(DEFAULT_LOGIT_LENS_TOP, "logit-lens tokens shown when the samples have them")
    attempts: int = option(3, "times to ask when an answer is not a label")
    retry_temperature: float = option(0.7, "least temperature when asking again after an answer that was not a label")
    prompt_form: str = option("paper", "paper: the papers' prompts (P_mono/P_domain, 000 App. A.1.1); compact: a short "
                                       "prompt with at most 6 clipped examples, for small local models")

    def check(self) -> None:
        require(self.max_examples >= 1, f"--max-examples must be >= 1 (got {self.max_examples})")
        require(self.logit_lens_top >= 0, f"--logit-lens-top must be >= 0 (got {self.logit_lens_top})")
        require(self.attempts >= 1, f"--attempts must be >= 1 (got {self.attempts})")
        require(self.prompt_form in PROMPT_FORMS,
                f"--prompt-form must be one of {', '.join(PROMPT_FORMS)} (got {self.prompt_form!r})")


@dataclass
class NoOptions(Options):
    """A method that takes no options of its own."""


@dataclass
class ExplainAccounting(Accounting):
    """The client's request/token counters plus moe-explain's per-expert outcomes (the end record)."""

    # answer_retries: answers that were not a label and were asked again; failures: experts recorded as failed
    no_examples: int = 0       # of those, experts with nothing to explain (no activating examples)
    labelled: int = 0          # experts labelled in this run
    skipped: int = 0           # experts already labelled in the output (resume)

    ORDER = ("requests", "cache_hits", "retries", "answer_retries", "length_retries", "failures", "no_examples",
             "labelled", "skipped", "prompt_tokens", "completion_tokens", "max_in_flight")

    def as_dict(self) -> dict:
        values = dataclasses.asdict(self)
        return {name: values[name] for name in self.ORDER}

    def line(self, seconds: float) -> str:
        tokens = self.prompt_tokens + self.completion_tokens
        nothing = f" ({self.no_examples} with no examples)" if self.no_examples else ""
        return (f"{self.labelled} labelled, {self.failures} failed{nothing}, {self.skipped} already done; "
                f"requests {self.requests}, cache hits {self.cache_hits}, "
                f"retries {self.retries + self.answer_retries}, tokens {tokens} (prompt {self.prompt_tokens}, "
                f"completion {self.completion_tokens}); {seconds:.1f} s")


@dataclass
class ExplainJob:
    """What a method is asked about one expert.

    Chat methods read ``messages`` (the paper's prompt, already filled in);
    methods that work from the activations themselves (``self``, ``offline``)
    read ``examples`` (the contexts shown, in order of activation) and ``record``.
    """

    layer: int
    expert: int
    messages: list[dict]
    examples: list[dict]
    record: dict = field(repr=False, default_factory=dict)
    attempt: int = 0
    #: the token limit of this request (None: the backend's own; larger after an answer was cut off)
    max_tokens: int | None = None
    #: requests sent for this job (retries included); methods add to it
    requests: int = 0


class Explainer:
    """Base class of an explainer method; subclasses override :meth:`complete` (async).

    ``options`` is an instance of the class's ``options_class`` (its own typed
    options); ``settings`` (:class:`ExplainSettings`) is set by the registry.
    Class attributes tell the runner how to drive it.
    """

    name = "?"
    options_class: type[Options] = NoOptions
    summary = ""
    #: answers may be stored in and served from the response cache
    cacheable = True
    #: the method answers the paper's chat prompt (so prompt kind mono/domain applies)
    uses_chat_prompt = True
    #: answers are deterministic: asking again gives the same answer
    deterministic = False
    #: the method needs every record before the first answer (see offline)
    needs_corpus_pass = False
    #: ``prompt.kind`` of its labels when it does not use the chat prompt
    prompt_kind: str | None = None

    def __init__(self, options: Options, accounting: Accounting):
        self.options = options
        self.accounting = accounting
        self.settings = ExplainSettings()

    @property
    def model(self) -> str | None:
        return getattr(self.options, "model", None)

    @property
    def concurrency(self) -> int:
        return 1

    @property
    def max_tokens(self) -> int | None:
        """The token limit of an answer when answers can be cut off (a cut-off one is asked again with more)."""
        return None

    def identity(self) -> dict:
        """``explainer`` field of the label records: backend, model, method."""
        return {"backend": self.name, "model": self.model, "method": None}

    def prepare(self) -> None:
        """Checks before any work (synchronous; may contact a server). Raises on failure."""

    def request_identity(self, job: ExplainJob) -> dict:
        """Everything the answer depends on: the response cache key (never a secret)."""
        return {"backend": self.name, "model": self.model, "messages": job.messages,
                "attempt": 0 if self.deterministic else job.attempt}

    def parse(self, text: str) -> str | None:
        return check_explanation(text)[0]

    def interpret(self, completion: Completion) -> tuple[str | None, str | None]:
        """``(label, None)`` or ``(None, why the answer is not one)``."""
        label = self.parse(completion.text)
        return (label, None) if label is not None else (None, check_explanation(completion.text)[1])

    def advice(self, kind: str) -> str | None:
        """What to change when many experts failed with ``kind`` (a BackendError kind, or ``answer``)."""
        return None

    async def start(self) -> None:
        """Called once before the first request (load a model, open a client)."""

    async def complete(self, job: ExplainJob) -> Completion:  # pragma: no cover - interface
        raise NotImplementedError

    async def aclose(self) -> None:
        """Called once at the end, also after an error or Ctrl-C."""
