"""The options of every command that asks a language model: one table, one decorator, one ``-O`` parser.

moe-explain, moe-score's judge (``--labels``) and moe-probe causal take the same flags under the
same names: ``--backend``, ``--model``, the backend options of :data:`BACKEND_FLAGS` (each backend
takes some; ``moe-explain --list-backends`` shows which, with defaults), ``-O KEY=VALUE`` for a
backend option without a flag (a plugin's), ``--attempts`` and the response cache's
``--cache-dir``, ``--no-cache``, ``--refresh``. :func:`llm_options` adds them to a command and hands
the command one :class:`LLMFlags` (keyword ``llm``) whose :meth:`LLMFlags.keywords` are the keyword
arguments of the library entry points (``backend``, ``backend_options``, ``attempts``,
``cache_dir``, ``no_cache``, ``refresh``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import click

from ..errors import UsageError
from .common import FINITE_FLOAT, warn

#: (flag, type, scope, help): the backend options with a flag; scope names the backends that take it
BACKEND_FLAGS = (
    ("--temperature", FINITE_FLOAT, "", "sampling temperature (0: greedy)."),
    ("--max-tokens", int, "", "most tokens an answer may have."),
    ("--api-base", str, "openai", "base URL of the endpoint [default: $OPENAI_BASE_URL or the OpenAI API]."),
    ("--api-key-env", str, "openai", "environment variable holding the API key (never printed or stored)."),
    ("--concurrency", int, "openai", "most requests in flight (halved while requests time out)."),
    ("--rate", FINITE_FLOAT, "openai", "most requests started per second (0: no limit)."),
    ("--timeout", FINITE_FLOAT, "openai", "seconds to wait for an answer once connected (read timeout)."),
    ("--connect-timeout", FINITE_FLOAT, "openai", "seconds to wait for a connection."),
    ("--max-retries", int, "openai", "retries of a request on 429/5xx/timeouts/connection errors/bad JSON."),
    ("--backoff-base", FINITE_FLOAT, "openai", "first retry waits about this many seconds, doubling (with jitter)."),
    ("--batch-size", int, "local", "prompts (or texts) computed together."),
    ("--device", str, "local", "torch device of a model run here (local, self, embedding)."),
)
#: backend options whose flag a command may leave out (``local=False``: the command's own --device is its model's)
LOCAL_FLAGS = ("--batch-size", "--device")
MODEL_HELP = ("the model: a server's model name (required with --api-base unless the server lists exactly one), "
              "or a directory or .gguf file for local/self.")
CACHE_NAMES = ("cache_dir", "no_cache", "refresh")


def param_name(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def parse_pairs(pairs) -> dict:
    """``-O KEY=VALUE`` options as ``{key: "value"}`` (dashes in a key read as underscores)."""
    given = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-O {pair!r}: expected KEY=VALUE")
        given[key.strip().replace("-", "_")] = value
    return given


@dataclass
class LLMFlags:
    """What the user gave of the LLM options (defaults left to the backend and the library)."""

    backend: str | None = None
    backend_options: dict = field(default_factory=dict)   # by flag, then by -O KEY=VALUE
    attempts: int | None = None
    cache_dir: str | None = None
    no_cache: bool = False
    refresh: bool = False
    flags: list[str] = field(default_factory=list)         # every LLM flag given, as typed (for refusals)

    def keywords(self) -> dict:
        """The keyword arguments of a library entry point that asks an LLM."""
        return {"backend": self.backend, "backend_options": dict(self.backend_options), "attempts": self.attempts,
                "cache_dir": self.cache_dir, "no_cache": self.no_cache, "refresh": self.refresh}

    def refuse(self, why: str, *, allowed: tuple[str, ...] = ()) -> None:
        """UsageError naming the first given LLM flag not in ``allowed``: ``--api-base {why}``."""
        stray = [flag for flag in self.flags if flag not in allowed]
        if stray:
            raise UsageError(f"{stray[0]} {why}")


def llm_options(*, backend_default: str | None, backend_help: str, attempts_help: str, model: bool | str = True,
                local: bool = True, prefix: str = "", max_tokens_default: int | None = None,
                attempts_default: int | None = None, cache_help: str = "", deprecated: dict | None = None):
    """Add the LLM options to a click command, which gets them as one :class:`LLMFlags` (keyword ``llm``).

    ``model=False``: the command has its own ``--model`` (moe-score: the routing model, also the
    judge's); ``model="llm_model"``: the python name of --model's value (moe-probe has an argument
    MODEL); ``local=False``: leaves out --batch-size/--device (moe-probe's --device is its model's);
    ``prefix``: put before each help text ("Judge"); ``max_tokens_default``/``attempts_default``: the
    defaults the library applies, shown in the help; ``deprecated``: hidden alias -> flag.
    """
    def text(scope: str, words: str) -> str:
        lead = ", ".join(part for part in (prefix, scope) if part)
        return f"{lead}: {words}" if lead else words[0].upper() + words[1:]

    flags = [(flag, kind, scope, words) for flag, kind, scope, words in BACKEND_FLAGS
             if local or flag not in LOCAL_FLAGS]
    if model:
        flags.insert(0, ("--model", str, "", MODEL_HELP))
    # the python name of each flag's value: --model may be another (a command's argument MODEL)
    names = {flag: model if flag == "--model" and isinstance(model, str) else param_name(flag) for flag, *_ in flags}
    options = [click.option("--backend", default=backend_default, show_default=backend_default is not None,
                            help=backend_help)]
    for flag, kind, scope, words in flags:
        if flag == "--max-tokens" and max_tokens_default is not None:
            words = words[:-1] + f" [default: {max_tokens_default}]."
        options.append(click.option(flag, names[flag], type=kind, default=None, help=text(scope, words)))
    aliases = {"deprecated_" + param_name(alias): (alias, param_name(flag))
               for alias, flag in (deprecated or {}).items()}
    for name, (alias, option_name) in aliases.items():
        options.append(click.option(alias, name, type=str, default=None, hidden=True,
                                    help=f"Deprecated: use --{option_name.replace('_', '-')}."))
    default_text = f" [default: {attempts_default}]" if attempts_default is not None else ""
    options += [
        click.option("-O", "--backend-option", "backend_option", multiple=True, metavar="KEY=VALUE",
                     help=text("", "a backend option without a flag here (e.g. a plugin's; moe-explain "
                                   "--list-backends lists every backend's).")),
        click.option("--attempts", type=int, default=None, help=text("", attempts_help + default_text + ".")),
        click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
                     help=text("", "response cache [default: $MOETOOLS_HOME/cache; MOETOOLS_HOME defaults to "
                                   f"~/.cache/moetools{cache_help}].")),
        click.option("--no-cache", is_flag=True, help=text("", "neither read nor write the response cache.")),
        click.option("--refresh", is_flag=True,
                     help=text("", "ask again even when the cache has an answer (and store the new one).")),
    ]

    def collect(values: dict) -> LLMFlags:
        llm = LLMFlags(backend=values.pop("backend"), attempts=values.pop("attempts"),
                       **{name: values.pop(name) for name in CACHE_NAMES})
        if llm.backend != backend_default:
            llm.flags.append("--backend")
        for flag, name in names.items():
            value = values.pop(name)
            if value is not None:
                llm.backend_options[param_name(flag)] = value
                llm.flags.append(flag)
        for alias_name, (alias, name) in aliases.items():
            value = values.pop(alias_name)
            if value is None:
                continue
            if name in llm.backend_options:
                raise UsageError(f"{alias} is the old name of --{name.replace('_', '-')}: give one of them")
            warn(f"{alias} is deprecated: use --{name.replace('_', '-')}")
            llm.backend_options[name] = value
            llm.flags.append(alias)
        pairs = parse_pairs(values.pop("backend_option"))
        llm.backend_options.update(pairs)
        llm.flags += [f"-O {key}" for key in pairs]
        llm.flags += [flag for flag, given in (("--attempts", llm.attempts is not None),
                                               ("--cache-dir", llm.cache_dir is not None),
                                               ("--no-cache", llm.no_cache), ("--refresh", llm.refresh)) if given]
        return llm

    def decorate(function):
        @functools.wraps(function)
        def command(*args, **values):
            return function(*args, llm=collect(values), **values)

        for option in reversed(options):
            command = option(command)
        return command

    return decorate


__all__ = ["BACKEND_FLAGS", "LLMFlags", "llm_options", "parse_pairs"]
