"""The explainer backend registry: one decorator, used by the built-ins and by users alike.

A backend is a class registered under a name::

    from moetools.llm import Explainer, Completion, register_explainer

    @register_explainer("echo")
    class EchoExplainer(Explainer):
        async def complete(self, job):
            return Completion(text="This expert specializes in echoing")

Built-in backends live in the modules listed in :data:`BUILTIN_MODULES`; a user's
own are found the same way, by importing a module whose import runs the
decorator. Such modules are named in the entry-points group
``moetools.explainers`` (``[project.entry-points."moetools.explainers"]
mine = "my_package.explainers"``) or in ``$MOETOOLS_EXPLAINERS``
(comma-separated module names). Modules load lazily, the first time a backend is
looked up, so ``--help`` stays fast and a broken plugin only matters when used.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from ..errors import UsageError

ENTRY_POINT_GROUP = "moetools.explainers"
#: the built-in backends: loaded exactly like a plugin module
BUILTIN_MODULES = ("moetools.llm.openai", "moetools.llm.local", "moetools.llm.self_explain",
                   "moetools.llm.offline")

_REGISTRY: dict[str, type] = {}
_imported: set[str] = set()


def register_explainer(name: str):
    """Class decorator: make ``cls`` available as ``--backend NAME``."""

    def decorate(cls):
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
            raise UsageError(f"two explainer backends named {name!r}: {existing.__module__} and {cls.__module__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _plugin_modules() -> list[str]:
    modules = list(BUILTIN_MODULES)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        modules.append(entry.value.split(":")[0])
    modules += [name.strip() for name in os.environ.get("MOETOOLS_EXPLAINERS", "").split(",") if name.strip()]
    return modules


def load_plugins() -> None:
    """Import every backend module not imported yet (built-ins, entry points, ``$MOETOOLS_EXPLAINERS``)."""
    for module in _plugin_modules():
        if module in _imported:
            continue
        try:
            importlib.import_module(module)
        except ImportError as error:
            if module in BUILTIN_MODULES:
                raise
            raise UsageError(f"cannot import explainer module {module!r}: {error}") from None
        _imported.add(module)


def available() -> list[str]:
    load_plugins()
    return sorted(_REGISTRY)


def get_explainer(name: str) -> type:
    """The backend class registered as ``name``."""
    load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown explainer backend {name!r} (available: {', '.join(sorted(_REGISTRY))})") \
            from None
