"""The one plugin mechanism: entry-point groups, moetools' own entries declared like anyone else's.

Groups: ``moetools.adapters`` (model families, :mod:`moetools.models.registry`),
``moetools.llm_backends`` (completion clients, :mod:`moetools.llm.registry`) and
``moetools.explainers`` (explainer methods that are not LLM clients). A package adds
to a group in its own pyproject.toml::

    [project.entry-points."moetools.adapters"]
    my_moe = "my_package.adapter:MyMoeAdapter"

When moetools runs uninstalled (``bin/`` launchers with ``PYTHONPATH``) or its
installed metadata predates a group, the built-ins are read from the checkout's
pyproject.toml: the same declarations. Nothing is imported until an entry is loaded.
"""

from __future__ import annotations

import re
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

BUILTIN_DISTRIBUTION = "moetools"


def distribution(entry: EntryPoint) -> str:
    """The name of the package that declares ``entry`` (moetools for the checkout's own)."""
    dist = getattr(entry, "dist", None)
    return dist.name if dist is not None else BUILTIN_DISTRIBUTION


def is_builtin(entry: EntryPoint) -> bool:
    return distribution(entry).lower().replace("_", "-") == BUILTIN_DISTRIBUTION


def checkout_entry_points(group: str) -> list[EntryPoint]:
    """The built-ins of ``group`` as declared in the checkout's pyproject.toml, in its order.

    ``console_scripts`` is the table ``[project.scripts]`` (the tools, :data:`moetools.cli.TOOLS`).
    """
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if not pyproject.is_file():
        return []
    table = (r"\[project\.scripts\]" if group == "console_scripts"
             else r'\[project\.entry-points\."' + re.escape(group) + r'"\]')
    pattern = r"^" + table + r"[ \t]*\n(.*?)(?=^\[|\Z)"
    section = re.search(pattern, pyproject.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    if section is None:
        return []
    pairs = re.findall(r'^[ \t]*"?([\w.-]+)"?[ \t]*=[ \t]*"([^"]+)"', section.group(1), re.MULTILINE)
    return [EntryPoint(name, value, group) for name, value in pairs]


def group_entries(group: str) -> list[tuple[EntryPoint, str]]:
    """(entry point, package) of ``group``: other packages' first (sorted), then the built-ins (sorted).

    Where a name appears twice, the earlier one in this list wins: another package's
    entry of the same name takes over a built-in.
    """
    found = list(entry_points(group=group))
    builtins = sorted([e for e in found if is_builtin(e)] or checkout_entry_points(group), key=lambda e: e.name)
    others = sorted((e for e in found if not is_builtin(e)), key=lambda e: (distribution(e), e.name))
    return [(e, distribution(e)) for e in others] + [(e, BUILTIN_DISTRIBUTION) for e in builtins]


def group_table(group: str) -> dict[str, tuple[EntryPoint, str]]:
    """name -> (entry point, package), other packages' entries winning over built-ins of the same name."""
    table: dict[str, tuple[EntryPoint, str]] = {}
    for entry, package in group_entries(group):
        table.setdefault(entry.name, (entry, package))
    return table


__all__ = ["BUILTIN_DISTRIBUTION", "checkout_entry_points", "distribution", "group_entries", "group_table",
           "is_builtin"]
