"""The ``bin/`` launchers of a checkout: one symlink per tool to the one generic launcher, ``bin/_launch``.

``bin/_launch TOOL ARGS...`` runs any tool of ``TOOLS`` (the console scripts of pyproject.toml) from
the checkout without installing it; called through a link named after a tool it runs that tool.
``make install`` and ``make bin`` (and the test session, tests/conftest.py) write the links, so a
new console script gets its ``bin/`` entry without a file of its own::

    python -m moetools.cli.launchers [DIRECTORY]     # default: the checkout's bin/
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import TOOLS

LAUNCHER = "_launch"
BIN = Path(__file__).resolve().parents[2] / "bin"


def write_launchers(directory: Path = BIN) -> list[str]:
    """Link ``directory/<tool>`` -> ``_launch`` for every tool (atomically); drop links of tools gone.

    Returns the tools whose link was made or changed. A regular file of a tool's name is replaced.
    """
    directory = Path(directory)
    made = []
    for name in TOOLS:
        path = directory / name
        if path.is_symlink() and os.readlink(path) == LAUNCHER:
            continue
        temporary = directory / f".{name}.{os.getpid()}.partial"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(LAUNCHER)
        os.replace(temporary, path)
        made.append(name)
    for path in directory.iterdir():
        if path.is_symlink() and os.readlink(path) == LAUNCHER and path.name not in TOOLS:
            path.unlink()
    return made


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else BIN
    if not (directory / LAUNCHER).is_file():
        print(f"launchers: {directory / LAUNCHER} missing (run from a moetools checkout)", file=sys.stderr)
        return 2
    made = write_launchers(directory)
    print(f"launchers: {len(TOOLS)} tools in {directory}" + (f" ({len(made)} linked)" if made else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
