"""Domain ``math``: the book *Derivations of Applied Mathematics* (Debian ``derivations``).

Text comes from the PDF through pypdf, one document per page (ids ``derivations:p0123``,
1-based), NFKC-folded so ligatures read as letters; pages with fewer than
:data:`MIN_PAGE_TOKENS` tokens (blank and title pages) are skipped. Pages are
consumed in hash order, so a token cap samples the whole book rather than its
first chapters, and only the pages kept are extracted.

Root: the PDF, or a directory holding ``derivations.pdf``.
"""

from __future__ import annotations

from pathlib import Path

from .sources import Source, SourceText, dpkg_version
from .splits import hash_order
from .text import count_tokens

MIN_PAGE_TOKENS = 50
DEFAULT_PDF = Path("/usr/share/doc/derivations/derivations.pdf")


class DerivationsSource(Source):
    domain = "math"
    name = "derivations"
    what = "the Derivations of Applied Mathematics book (/usr/share/doc/derivations/derivations.pdf)"
    install = "apt-get install derivations"
    compatibility_text = True

    def __init__(self, root=None):
        super().__init__(root)
        self._reader = None

    def default_root(self) -> Path:
        return DEFAULT_PDF

    def _pdf_path(self) -> Path | None:
        if self.root is not None and self.root.is_dir():
            found = sorted(self.root.glob("*.pdf"))
            return found[0] if found else None
        return self.root if self.root is not None and self.root.is_file() else None

    def check(self) -> None:
        super().check()
        if self._pdf_path() is None:
            raise self.missing("no PDF file")
        try:
            import pypdf  # noqa: F401
        except ImportError:
            from .sources import MissingSourceError

            raise MissingSourceError(self.domain, "pypdf, to read the derivations PDF", "pip install pypdf") \
                from None

    def _pages(self):
        if self._reader is None:
            from pypdf import PdfReader

            self._reader = PdfReader(str(self._pdf_path()))
        return self._reader.pages

    def units(self) -> list[str]:
        return hash_order(f"p{number:04d}" for number in range(1, len(self._pages()) + 1))

    def load(self, unit: str) -> SourceText | None:
        text = self._pages()[int(unit[1:]) - 1].extract_text() or ""
        if count_tokens(text) < MIN_PAGE_TOKENS:
            return None
        return SourceText(id=f"derivations:{unit}", text=text)

    def describe(self) -> dict:
        info = super().describe()
        info["pdf"] = str(self._pdf_path()) if self.root else None
        info["pages"] = len(self._reader.pages) if self._reader is not None else None
        try:
            from pypdf import __version__ as pypdf_version
        except ImportError:
            pypdf_version = None
        info["pypdf"] = pypdf_version
        return info

    def version(self) -> str | None:
        return dpkg_version("derivations")
