"""Thin click commands, one module per tool; the shared conventions live in ``common``.

``TOOLS`` maps each console script to the module holding its ``command``. It is read from the one
place a tool is declared, ``[project.scripts]``: the checkout's pyproject.toml when moetools runs
from a checkout (``bin/`` launchers, ``PYTHONPATH``), else the installed distribution's metadata.
The man pages (``make man``), the ``bin/`` launchers (``launchers``), the startup-time test and
the bad-input tests iterate it, so a tool is covered the day its console script is declared.
"""

from __future__ import annotations

import re
from pathlib import Path

#: ``name = "package.module:function"`` lines of ``[project.scripts]`` (the table holds nothing else)
_SCRIPT_LINE = re.compile(r"""^([\w.-]+)\s*=\s*["']([\w.]+):(\w+)["']""", re.MULTILINE)


def _checkout_scripts(pyproject: Path) -> dict[str, str] | None:
    """``[project.scripts]`` of the checkout's pyproject.toml (name -> module), None if it is not moetools'."""
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    if not re.search(r"""^name\s*=\s*["']moetools["']""", text, re.MULTILINE):
        return None
    section = re.search(r"^\[project\.scripts\][ \t]*\n(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
    return {name: module for name, module, _ in _SCRIPT_LINE.findall(section.group(1))} if section else None


def _installed_scripts() -> dict[str, str]:
    """The console scripts of the installed moetools distribution (name -> module)."""
    from importlib.metadata import distribution

    return {entry.name: entry.value.partition(":")[0] for entry in distribution("moetools").entry_points
            if entry.group == "console_scripts"}


def _tools() -> dict[str, str]:
    return _checkout_scripts(Path(__file__).resolve().parents[2] / "pyproject.toml") or _installed_scripts()


TOOLS = _tools()


def load_command(name: str):
    """The click command of tool ``name``."""
    import importlib

    return importlib.import_module(TOOLS[name]).command
