"""The source interface of the corpus builder, and the registry of domains.

A :class:`Source` turns one offline resource into :class:`SourceText` s for one
domain. It lists its units cheaply (files, pages, categories, fortunes) in the
order the builder consumes them (:meth:`Source.units`), so a token cap reads only
what it keeps, and loads each unit on demand (:meth:`Source.load`).

Every source can be pointed elsewhere (``root``), which is how tests use a
fixture tree and how users use their own copy; when a resource is missing the
source raises :class:`MissingSourceError` naming it and the command that
installs it. The builder installs nothing.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

#: domain -> "module:Class" of its source (imported lazily: pypdf only when math is asked for)
SOURCE_CLASSES = {
    "code": "code:StdlibCodeSource",
    "legal": "legal:LegalSource",
    "medical": "medical:Icd10cmSource",
    "math": "math:DerivationsSource",
    "general": "fortunes:CleanFortunesSource",
    "offensive": "fortunes:OffensiveFortunesSource",
}
DOMAINS = tuple(SOURCE_CLASSES)


class MissingSourceError(UsageError):
    """A source the user asked for is not on this machine (exit 2); says how to install it."""

    def __init__(self, domain: str, what: str, install: str):
        self.domain, self.what, self.install = domain, what, install
        super().__init__(f"missing source for domain '{domain}': {what}; install it with: {install}")


@dataclass
class SourceText:
    """One text a source yields (a file, a page, a category, a fortune), before chunking.

    Not a corpus :class:`moetools.corpus.documents.Document`: the builder chunks it into
    the JSON-lines records that the corpus reader later reads back as documents.

    ``id`` is stable across runs and machines (a path relative to the source's
    root, a code, a page number or a content hash, prefixed by the source's
    short name) and decides the document's split.
    """

    id: str
    text: str
    extra: dict = field(default_factory=dict)  # fields copied into every record, e.g. toxicity


class Source:
    """Base class; subclasses set the class attributes and implement the three methods."""

    domain: str = ""
    name: str = ""          # distribution or package the text comes from, e.g. "simple-icd-10-cm"
    what: str = ""          # human description for messages
    install: str = ""       # command that installs it
    compatibility_text = False  # NFKC-fold the text (PDF ligatures)
    limit_chunks_per_document = True  # the builder's per-document chunk cap applies

    def __init__(self, root: str | Path | None = None):
        self.overridden = root is not None
        self.root = Path(root) if root is not None else self.default_root()

    def default_root(self) -> Path | None:
        """Where the resource lives on this machine, or None when it is not installed."""
        raise NotImplementedError

    def missing(self, detail: str | None = None) -> MissingSourceError:
        what = self.what
        if self.overridden:
            what = f"{self.what} not found under {self.root}"
        elif detail:
            what = f"{self.what} ({detail})"
        return MissingSourceError(self.domain, what, self.install)

    def check(self) -> None:
        """Raise :class:`MissingSourceError` unless the resource is there and readable."""
        if self.root is None or not self.root.exists():
            raise self.missing("not installed")

    def units(self) -> list[str]:
        """Unit keys in consumption order (deterministic, usually a salted hash order)."""
        raise NotImplementedError

    def load(self, unit: str) -> SourceText | None:
        """The document of ``unit``, or None when it holds no usable text."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Provenance for the manifest: package, version, path."""
        return {"source": self.name, "path": str(self.root) if self.root else None,
                "version": None if self.overridden else self.version(), "overridden": self.overridden}

    def version(self) -> str | None:
        return distribution_version(self.name)


def distribution_version(name: str) -> str | None:
    """The installed version of a Python distribution, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def dpkg_version(package: str, status: Path = Path("/var/lib/dpkg/status")) -> str | None:
    """The installed version of a Debian package, read from dpkg's status file, or None."""
    try:
        text = status.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.split("\n") if ": " in line and line[0] != " ")
        if fields.get("Package") == package and "installed" in fields.get("Status", ""):
            return fields.get("Version")
    return None


def make_source(domain: str, root: str | Path | None = None) -> Source:
    """The source of ``domain`` (``root`` overrides where it reads from)."""
    if domain not in SOURCE_CLASSES:
        raise UsageError(f"unknown domain {domain!r} (choose from {', '.join(DOMAINS)})")
    module_name, class_name = SOURCE_CLASSES[domain].split(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, class_name)(root)
