"""Backends come from entry-point groups; moetools' own are declared in its pyproject.toml the same way.

A completion backend is a :class:`moetools.llm.CompletionClient` subclass named in
the group ``moetools.llm_backends``::

    # my_package's pyproject.toml
    [project.entry-points."moetools.llm_backends"]
    mine = "my_package.client:MyClient"

The built-ins (``openai``, ``local``) are declared in moetools' pyproject.toml
exactly so. When moetools runs uninstalled (``bin/`` launchers with
``PYTHONPATH``) or its installed metadata predates a group, the built-ins are read
from the checkout's pyproject.toml: the same declarations. Entries load lazily,
the first time a backend is looked up, so ``--help`` stays fast and a broken
plugin only matters when it is used. Another package's entry point of the same
name takes over a built-in.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint

from ..errors import UsageError
from ..plugins import group_table

ENTRY_POINT_GROUP = "moetools.llm_backends"


def group_entry_points(group: str) -> dict[str, tuple[EntryPoint, str]]:
    """name -> (entry point, package) of ``group`` (:func:`moetools.plugins.group_table`)."""
    return group_table(group)


def load_entry(entry: EntryPoint, distribution: str, what: str):
    try:
        return entry.load()
    except (ImportError, AttributeError) as error:
        raise UsageError(f"cannot load {what} {entry.name} = {entry.value!r} (package {distribution}): "
                         f"{error}") from None


_LOADED: dict[str, type] = {}


def available() -> dict[str, str]:
    """Backend name -> the package that provides it."""
    return {name: distribution for name, (_, distribution) in sorted(group_entry_points(ENTRY_POINT_GROUP).items())}


def client_class(name: str) -> type:
    """The :class:`moetools.llm.CompletionClient` subclass registered as ``name``."""
    from .base import CompletionClient

    if name not in _LOADED:
        table = group_entry_points(ENTRY_POINT_GROUP)
        if name not in table:
            raise UsageError(f"unknown LLM backend {name!r} (available: {', '.join(sorted(table))})")
        cls = load_entry(*table[name], "LLM backend")
        if not (isinstance(cls, type) and issubclass(cls, CompletionClient)):
            raise UsageError(f"LLM backend {name} = {table[name][0].value!r} is not a CompletionClient subclass")
        cls.name = name
        _LOADED[name] = cls
    return _LOADED[name]


def make_client(name: str, options=None, accounting=None):
    """A client of backend ``name``; ``options`` is its options dataclass or a mapping of option values.

    A mapping goes through the backend's ``options_class.from_settings`` (types,
    defaults, checks; an option the backend does not take is a UsageError).
    """
    cls = client_class(name)
    if not isinstance(options, cls.options_class):
        options = cls.options_class.from_settings(options or {}, backend=name)
    return cls(options, accounting)
