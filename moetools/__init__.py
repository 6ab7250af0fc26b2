"""moetools: interpret Mixture-of-Experts language models at the level of whole experts.

The public Python API is :data:`__all__` (defined in ``moetools.api``, which imports a tool's library only
when its function runs, so that ``import moetools`` stays light): ``moetools.open`` and ``moetools.routing`` / ``moetools.scores_table``
read streams into numpy (and pandas), and ``moetools.NAME(...)`` runs the tool ``moe-NAME`` with keyword
arguments and returns its output path (``moetools.evaluate`` for moe-eval; ``moetools.merge`` for
``moe-tune merge``). Each tool's logic lives in its own module (``moetools.streams``, ``moetools.trace``,
...) and ``moetools.cli`` holds the thin click commands.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:  # one source of truth: the installed package metadata (pyproject.toml)
    __version__ = _version("moetools")
except PackageNotFoundError:  # running from a checkout via bin/ without install
    import re as _re
    from pathlib import Path as _Path

    _pyproject = _Path(__file__).resolve().parent.parent / "pyproject.toml"
    _match = _re.search(r'^version\s*=\s*"([^"]+)"', _pyproject.read_text(), _re.MULTILINE) if _pyproject.exists() else None
    __version__ = _match.group(1) if _match else "0+unknown"


import sys as _sys
import types as _types

from .api import (
    Routing,
    Stream,
    evaluate,
    explain,
    mask,
    merge,
    open,
    report,
    routing,
    sample,
    score,
    scores_table,
    select,
    trace,
    tune,
)

__all__ = [
    "Routing",
    "Stream",
    "__version__",
    "evaluate",
    "explain",
    "mask",
    "merge",
    "open",
    "report",
    "routing",
    "sample",
    "score",
    "scores_table",
    "select",
    "trace",
    "tune",
]


class _Package(_types.ModuleType):
    """moetools itself: its API functions stay what ``moetools.trace`` names.

    The library's subpackage of the same name (``moetools.trace``, ``moetools.sample``...) is imported
    as usual (``from moetools.trace import run_trace``, ``importlib.import_module("moetools.trace")``),
    but importing it does not rebind the package attribute to the subpackage, as Python otherwise does.
    """

    def __setattr__(self, name, value):
        if name in __all__ and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
