"""What every completion client is, takes and returns: options, completions, accounting, errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import MoetoolsError, UsageError


class BackendError(MoetoolsError):
    """A request that failed after its retries (the caller records the item as failed and goes on).

    ``kind`` says what went wrong, for advice: ``timeout``, ``connection``, ``http``, ``malformed``.
    """

    def __init__(self, message: str, kind: str = "http", requests: int = 0):
        super().__init__(message)
        self.kind = kind
        self.requests = requests  # requests sent for it, retries included


class FatalBackendError(MoetoolsError):
    """A failure no other request can escape (bad key, unknown model, unreachable server): the run stops."""


@dataclass
class Usage:
    """Tokens of one answer as the backend reported them (0 when unknown), and the requests it took."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 1  # retries included; 0 for an answer from the cache


@dataclass
class Completion:
    """One answer: its text, why it ended, its token usage and whether it came from the cache.

    ``finish_reason`` is the server's (``"stop"``, ``"length"`` when cut off by
    ``max_tokens``, or None when unknown). ``details`` carries evidence of methods
    that are not chat models (moetools.explain's offline and self methods).
    """

    text: str
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    cached: bool = False
    details: dict | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass
class Accounting:
    """Request and token counters of one run, shared by a client and whoever drives it."""

    requests: int = 0          # requests actually sent (HTTP requests, generated prompts), retries included
    cache_hits: int = 0
    retries: int = 0           # transport-level retries (429, 5xx, timeouts, dropped connections, bad JSON)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    max_in_flight: int = 0
    answer_retries: int = 0    # answers that did not parse and were asked again (moetools.llm.exchange)
    length_retries: int = 0    # answers cut off at max_tokens, asked again with a larger limit (moetools.llm.exchange)
    failures: int = 0          # exchanges that ended without an answer (after every attempt, or a transport failure)

    def add_usage(self, usage: Usage) -> None:
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def option(default: Any, help: str, **metadata) -> Any:
    """A field of an options dataclass with its help text (shown by ``moe-explain --list-backends``)."""
    return field(default=default, metadata={"help": help, **metadata})


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _type_text(annotation: Any) -> str:
    """``"int"``, ``"str | None"``: a field's annotation as text (a string already under postponed annotations)."""
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", None) or str(annotation)


def _convert(value: Any, annotation: str, name: str) -> Any:
    """``value`` (a flag's typed value, or a ``-O key=value`` string) as the field's type."""
    if value is None or not isinstance(value, str):
        if isinstance(value, int) and not isinstance(value, bool) and "float" in annotation:
            return float(value)
        return value
    kinds = annotation.replace(" ", "").split("|")
    try:
        if "bool" in kinds:
            lowered = value.lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(value)
            return lowered in ("1", "true", "yes", "on")
        if "int" in kinds:
            return int(value)
        if "float" in kinds:
            return float(value)
    except ValueError:
        raise UsageError(f"{flag_name(name)}: {value!r} is not a valid {kinds[0]}") from None
    return value


@dataclass
class Options:
    """Base of a backend's typed options: each backend's own dataclass owns its defaults and checks.

    :meth:`from_settings` takes what the user gave (flags by field name; ``-O
    key=value`` strings are converted by the field's type), refuses what the backend
    does not take, fills in the defaults and runs :meth:`check`.
    """

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None = None, *, backend: str = "?") -> Options:
        known = {item.name: item for item in dataclasses.fields(cls)}
        unknown = [name for name in (settings or {}) if name not in known]
        if unknown:
            takes = ", ".join(flag_name(name) for name in known) or "no options"
            raise UsageError(f"{', '.join(flag_name(name) for name in unknown)} does not apply to backend "
                             f"{backend} (it takes {takes})")
        values = {name: _convert(value, _type_text(known[name].type), name) for name, value in (settings or {}).items()}
        options = cls(**values)
        options.check()
        return options

    def check(self) -> None:
        """Raise :class:`moetools.errors.UsageError` for values that cannot work."""

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str]]:
        """``(flag, default, help)`` of every option, for ``--list-backends``."""
        return [(flag_name(item.name), item.default, item.metadata.get("help", ""))
                for item in dataclasses.fields(cls)]


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


@dataclass
class GenerationOptions(Options):
    """What every completion client takes: the model and how much and how randomly to answer."""

    model: str | None = option(None, "the model (a name for a server, a directory or file for a local model)")
    temperature: float = option(0.0, "sampling temperature (0: greedy)")
    max_tokens: int = option(64, "most tokens an answer may have (an answer cut off there is asked again once "
                                 "with twice as many, at most 1024)")

    def check(self) -> None:
        require(self.temperature >= 0, f"--temperature must be >= 0 (got {self.temperature})")
        require(self.max_tokens >= 1, f"--max-tokens must be >= 1 (got {self.max_tokens})")


class CompletionClient:
    """Base class of a completion backend: chat messages in, :class:`Completion` out.

    Subclasses set ``options_class`` and implement :meth:`complete` (async); the
    client itself bounds its requests in flight to :attr:`concurrency`.
    """

    name = "?"
    options_class: type[GenerationOptions] = GenerationOptions
    #: one line for ``--list-backends``
    summary = ""
    #: the client can start the answer with a given prefix (``answer_prefix``)
    supports_prefix = False

    def __init__(self, options: GenerationOptions, accounting: Accounting | None = None):
        self.options = options
        self.accounting = accounting if accounting is not None else Accounting()

    @property
    def model(self) -> str | None:
        return self.options.model

    @property
    def concurrency(self) -> int:
        return 1

    def identity(self) -> dict:
        """What identifies the answering model: backend, endpoint (where one exists), model (never a secret)."""
        return {"backend": self.name, "model": self.model}

    def label(self) -> dict:
        """``{backend, model, method}`` for records (the model as people name it)."""
        return {"backend": self.name, "model": self.model, "method": None}

    def parameters(self, temperature: float | None = None, max_tokens: int | None = None,
                   answer_prefix: str | None = None) -> dict:
        """Generation parameters that change the answer (options' defaults filled in)."""
        parameters = {"temperature": float(self.options.temperature if temperature is None else temperature),
                      "max_tokens": int(self.options.max_tokens if max_tokens is None else max_tokens)}
        if answer_prefix is not None:
            parameters["answer_prefix"] = answer_prefix
        return parameters

    def request_identity(self, messages: list[dict], **parameters) -> dict:
        """Everything an answer depends on: the response cache key."""
        return {"client": self.identity(), "messages": messages, "parameters": self.parameters(**parameters)}

    def prepare(self) -> None:
        """Checks before any work (synchronous): reach the server, resolve the model. Raises on failure."""

    def advice(self, kind: str) -> str | None:
        """What to change when many requests failed with ``kind`` (see :class:`BackendError`)."""
        return None

    async def start(self) -> None:
        """Called once before the first request (load a model, open connections)."""

    async def complete(self, messages: list[dict], *, temperature: float | None = None,
                       max_tokens: int | None = None, answer_prefix: str | None = None) -> Completion:
        raise NotImplementedError  # pragma: no cover - interface

    async def aclose(self) -> None:
        """Called once at the end, also after an error or Ctrl-C."""
