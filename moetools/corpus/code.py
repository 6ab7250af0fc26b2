"""Domain ``code``: the Python standard library's own source files.

Root: the running interpreter's ``sysconfig.get_paths()["stdlib"]`` (or any
directory of ``.py`` files). Test suites, third-party packages and files that
are not UTF-8 are left out; the id of a file is its path relative to the root.
"""

from __future__ import annotations

import platform
import sysconfig
from pathlib import Path

from .sources import Source, SourceText
from .splits import hash_order

#: directories never read: tests (deliberately odd files), installed packages, caches
SKIPPED_DIRECTORIES = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages",
                                 "__pycache__", "lib2to3", "turtledemo"})


class StdlibCodeSource(Source):
    domain = "code"
    name = "python-stdlib"
    what = "the Python standard library sources (*.py)"
    install = "apt-get install libpython3-stdlib (or any CPython with its Lib/ sources)"

    def default_root(self) -> Path | None:
        return Path(sysconfig.get_paths()["stdlib"])

    def _files(self) -> list[str]:
        if getattr(self, "_listed", None) is not None:
            return self._listed
        files = []
        for path in self.root.rglob("*.py"):
            relative = path.relative_to(self.root)
            if SKIPPED_DIRECTORIES.intersection(relative.parts[:-1]) or not path.is_file():
                continue
            files.append(relative.as_posix())
        self._listed = files
        return files

    def check(self) -> None:
        super().check()
        if not self.root.is_dir() or not self._files():
            raise self.missing("no .py files")

    def units(self) -> list[str]:
        return hash_order(self._files())

    def load(self, unit: str) -> SourceText | None:
        try:
            text = (self.root / unit).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            return None
        return SourceText(id=f"stdlib:{unit}", text=text) if text.strip() else None

    def version(self) -> str | None:
        return f"{platform.python_implementation()} {platform.python_version()}"
