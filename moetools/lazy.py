"""Names a package exports without importing their modules until first used (PEP 562).

So that ``import moetools.<package>`` (the commands' ``--help``, tests/cli/test_startup.py) stays free of
torch while the package still exports its tool's entry point::

    __getattr__ = lazy_exports(__name__, {"run_trace": "run"})
"""

from __future__ import annotations

import importlib


def lazy_exports(package: str, names: dict[str, str]):
    """A module ``__getattr__`` for ``package``: ``names`` maps each exported name to its module (relative)."""

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(f".{names[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
