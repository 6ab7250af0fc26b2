"""Thin click commands, one module per tool; the shared conventions live in ``common``.

``TOOLS`` maps each console script to the module holding its ``command``. It is read from the one
place a tool is declared, ``[project.scripts]``: the checkout's pyproject.toml when moetools runs
from a checkout (``bin/`` launchers, ``PYTHONPATH``; :func:`moetools.plugins.checkout_entry_points`),
else the installed distribution's metadata. The man pages (``make man``), the ``bin/`` links
(``launchers``), the startup-time test and the bad-input tests iterate it, so a tool is covered the
day its console script is declared.
"""

from __future__ import annotations


def _tools() -> dict[str, str]:
    from ..plugins import checkout_entry_points

    scripts = checkout_entry_points("console_scripts")
    if not scripts:
        from importlib.metadata import distribution

        scripts = [entry for entry in distribution("moetools").entry_points if entry.group == "console_scripts"]
    return {entry.name: entry.value.partition(":")[0] for entry in scripts}


TOOLS = _tools()


def load_command(name: str):
    """The click command of tool ``name``."""
    import importlib

    return importlib.import_module(TOOLS[name]).command
