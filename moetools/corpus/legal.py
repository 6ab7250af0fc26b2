"""Domain ``legal``: licence texts and Debian copyright files, deduplicated by paragraph.

Root: a directory laid out like ``/usr/share`` (the default): ``common-licenses/*``
and ``doc/*/copyright``. The licences come first (sorted by name) so that their
canonical texts are kept whole; the copyright files follow in hash order and
keep only paragraphs not seen before (case and spacing folded, see
:func:`moetools.corpus.text.paragraph_key`): hundreds of packages quote the same
GPL notice, which would otherwise dominate the domain.
"""

from __future__ import annotations

from pathlib import Path

from .sources import Source, SourceText, dpkg_version
from .splits import hash_order
from .text import paragraph_key, split_paragraphs


def _debian_paragraphs(text: str) -> str:
    """DEP-5 copyright files mark blank lines inside a field with a lone '.'; make them blank."""
    return "\n".join("" if line.strip() == "." else line for line in text.split("\n"))


class LegalSource(Source):
    domain = "legal"
    name = "debian-licenses"
    what = "licence texts (/usr/share/common-licenses, /usr/share/doc/*/copyright)"
    install = "apt-get install base-files"
    # paragraph deduplication already keeps one file from dominating; licences stay whole
    limit_chunks_per_document = False

    def __init__(self, root=None):
        super().__init__(root)
        self.seen_paragraphs: set[str] = set()
        self.duplicate_paragraphs = 0

    def default_root(self) -> Path:
        return Path("/usr/share")

    def _licences(self) -> list[str]:
        directory = self.root / "common-licenses"
        if not directory.is_dir():
            return []
        # a symlink (GPL -> GPL-3) is the same text under a second name: read it once
        return sorted(f"common-licenses/{path.name}" for path in directory.iterdir()
                      if path.is_file() and not path.is_symlink())

    def _copyright_files(self) -> list[str]:
        directory = self.root / "doc"
        if not directory.is_dir():
            return []
        return [f"doc/{path.parent.name}/copyright" for path in directory.glob("*/copyright")
                if path.is_file() and not path.is_symlink()]

    def check(self) -> None:
        super().check()
        if not self._licences() and not self._copyright_files():
            raise self.missing("no common-licenses/ or doc/*/copyright")

    def units(self) -> list[str]:
        return self._licences() + hash_order(self._copyright_files())

    def load(self, unit: str) -> SourceText | None:
        try:
            text = (self.root / unit).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            return None
        kept = []
        for paragraph in split_paragraphs(_debian_paragraphs(text)):
            key = paragraph_key(paragraph)
            if key in self.seen_paragraphs:
                self.duplicate_paragraphs += 1
                continue
            self.seen_paragraphs.add(key)
            kept.append(paragraph)
        if not kept:
            return None
        name = unit.split("/")[1]
        prefix = "license" if unit.startswith("common-licenses/") else "copyright"
        return SourceText(id=f"{prefix}:{name}", text="\n\n".join(kept))

    def describe(self) -> dict:
        info = super().describe()
        info.update(licences=len(self._licences()), copyright_files=len(self._copyright_files()),
                    duplicate_paragraphs_dropped=self.duplicate_paragraphs)
        return info

    def version(self) -> str | None:
        return dpkg_version("base-files")

