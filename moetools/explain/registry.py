"""Which explainer ``--backend NAME`` means: a method of its own, or the LLM-prompted explainer over a client.

Two entry-point groups, loaded the same way (:mod:`moetools.llm.registry`), with
moetools' built-ins declared in its pyproject.toml exactly as another package
declares its own:

- ``moetools.llm_backends``: completion clients (``openai``, ``local``); ``--backend``
  of one of them runs the paper's chat prompt through it (:mod:`moetools.explain.chat`).
- ``moetools.explainers``: methods that are not a chat model answering the
  prompt (``self``, ``offline``); an entry names the class (``pkg.mod:MyExplainer``)
  or a module whose import registers classes with :func:`register_explainer`::

    from moetools.explain import Explainer, register_explainer
    from moetools.llm import Completion

    @register_explainer("echo")
    class EchoExplainer(Explainer):
        async def complete(self, job):
            return Completion(text="This expert specializes in echoing")

  Modules named in ``$MOETOOLS_EXPLAINERS`` (comma-separated) are imported too.

Each backend's options are its own typed dataclass (``options_class``); the CLI
hands over what the user gave and the backend refuses what it does not take.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from ..errors import UsageError
from ..llm import registry as llm_registry
from .method import ExplainAccounting, Explainer, ExplainSettings

ENTRY_POINT_GROUP = "moetools.explainers"

_REGISTERED: dict[str, type] = {}
_imported: set[str] = set()


def register_explainer(name: str):
    """Class decorator: make ``cls`` available as ``--backend NAME``."""

    def decorate(cls):
        existing = _REGISTERED.get(name)
        if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
            raise UsageError(f"two explainer backends named {name!r}: {existing.__module__} and {cls.__module__}")
        cls.name = name
        _REGISTERED[name] = cls
        return cls

    return decorate


def _load_registered() -> None:
    """Import ``$MOETOOLS_EXPLAINERS`` modules and module-only entry points (their decorators register)."""
    modules = [entry.value for entry, _ in llm_registry.group_entry_points(ENTRY_POINT_GROUP).values()
               if ":" not in entry.value]
    modules += [name.strip() for name in os.environ.get("MOETOOLS_EXPLAINERS", "").split(",") if name.strip()]
    for module in modules:
        if module in _imported:
            continue
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise UsageError(f"cannot import explainer module {module!r}: {error}") from None
        _imported.add(module)


def explainer_names() -> dict[str, str]:
    """Explainer method name -> package (LLM backends not included)."""
    _load_registered()
    names = {name: package for name, (entry, package) in
             llm_registry.group_entry_points(ENTRY_POINT_GROUP).items() if ":" in entry.value}
    names.update({name: cls.__module__.split(".")[0] for name, cls in _REGISTERED.items()})
    return dict(sorted(names.items()))


def explainer_class(name: str) -> type | None:
    """The method class registered as ``name``, or None when ``name`` is not an explainer method."""
    _load_registered()
    if name in _REGISTERED:
        return _REGISTERED[name]
    table = llm_registry.group_entry_points(ENTRY_POINT_GROUP)
    if name not in table or ":" not in table[name][0].value:
        return None
    cls = llm_registry.load_entry(*table[name], "explainer")
    if not (isinstance(cls, type) and issubclass(cls, Explainer)):
        raise UsageError(f"explainer {name} = {table[name][0].value!r} is not an Explainer subclass")
    cls.name = name
    _REGISTERED[name] = cls
    return cls


def available() -> list[str]:
    """Every ``--backend`` name: explainer methods and LLM backends."""
    return sorted({*explainer_names(), *llm_registry.available()})


def make_explainer(name: str, options: Mapping[str, Any] | None = None, *, settings: ExplainSettings | None = None,
                   accounting: ExplainAccounting | None = None) -> Explainer:
    """The explainer ``--backend NAME`` means, with its typed options built from ``options``."""
    from .chat import LLMExplainer

    accounting = accounting if accounting is not None else ExplainAccounting()
    cls = explainer_class(name)
    if cls is not None:
        explainer = cls(cls.options_class.from_settings(options or {}, backend=name), accounting)
    elif name in llm_registry.available():
        explainer = LLMExplainer(llm_registry.make_client(name, options or {}, accounting), accounting)
    else:
        raise UsageError(f"unknown explainer backend {name!r} (available: {', '.join(available())})")
    explainer.settings = settings if settings is not None else ExplainSettings()
    return explainer


def backend_table() -> list[dict]:
    """One row per ``--backend`` name: name, kind, package, summary, options ``[(flag, default, help)]``."""
    rows = []
    for kind, names, load in (("LLM", llm_registry.available(), llm_registry.client_class),
                              ("method", explainer_names(), explainer_class)):
        for name, package in names.items():
            try:
                cls = load(name)
            except UsageError as error:  # a broken plugin is listed with its problem, not hidden
                rows.append({"name": name, "kind": kind, "package": package, "summary": str(error), "options": []})
                continue
            rows.append({"name": name, "kind": kind, "package": package, "summary": cls.summary,
                         "options": cls.options_class.describe()})
    return sorted(rows, key=lambda row: row["name"])


def describe_backends() -> str:
    """The text of ``moe-explain --list-backends``."""
    lines = ["every backend: what moe-explain asks of it"]
    lines += [f"    {flag:<18} {help_text} [default: {default}]" for flag, default, help_text in
              ExplainSettings.describe() if flag != "--retry-temperature"]
    for row in backend_table():
        lines.append(f"{row['name']} ({row['kind']}, package {row['package']}): {row['summary']}")
        for flag, default, help_text in row["options"]:
            shown = "" if default is None else f" [default: {default}]"
            lines.append(f"    {flag:<18} {help_text}{shown}")
    return "\n".join(lines)
