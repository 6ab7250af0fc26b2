"""moetools: interpret Mixture-of-Experts language models at the level of whole experts.

The library is importable without the CLI; each tool's logic lives in its own
module (``moetools.streams``, ``moetools.trace``, ...) and ``moetools.cli``
holds the thin click commands.
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

