"""Reading a corpus: the one :class:`Document` and reader that trace, train, tune, eval and probe use.

    for document in read_corpus("validation.jsonl", bad_lines="skip", on_skip=warn):
        document.text, document.doc_id, document.meta, document.domain("domain")

Input is JSON lines (``{"text": ..., "id": ..., other fields...}``; the other fields
become ``meta``) or plain text (one document per line), decided by the first
non-blank line. One rule for every tool that reads a corpus (moe-trace, moe-eval,
moe-tune, moe-probe, monet-train):

- *empty documents* (a JSON line whose text is empty or blank) are skipped and
  counted (``CorpusStats.empty``); one warning gives the count when the read ends;
- *unusable lines* (invalid UTF-8, invalid JSON, not an object, no string text
  field) follow ``bad_lines``: ``"skip"`` (each reported through
  ``on_skip(line_number, reason)`` and counted in ``CorpusStats``; one warning gives
  the count and the first: moe-trace, moe-eval, moe-probe) or ``"fail"`` (the first one raises
  :class:`UsageError` naming the file and line: monet-train, moe-tune, since training
  on a silently shortened corpus is worse than stopping);
- *binary data* (a NUL byte, a first line that is not UTF-8, or a moetools stream
  given as a corpus) is refused at once (:class:`FormatError`, exit 2);
- when nothing usable is left the read is refused: no bytes, only blank lines or
  only empty documents is *empty input* (:class:`EmptyInputError`, exit 3, as an
  empty stream is); lines that were all unusable are invalid input (exit 2).

Documents are yielded one at a time, so memory does not grow with the corpus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import EmptyInputError, FormatError, UsageError
from ..progress import Log, log_warning
from ..streams.files import is_stdio, open_input
from ..streams.strict_json import read_object

BAD_LINE_POLICIES = ("skip", "fail")


@dataclass
class Document:
    """One document of a corpus."""

    index: int  # 0-based index among the corpus's usable documents (before sharding)
    line: int  # 1-based line number in the corpus file
    doc_id: str  # the id field, else "<name>:<line>"
    text: str
    meta: dict = field(default_factory=dict)  # every other field of the JSON line

    def domain(self, domain_field: str = "domain", default: str = "all") -> str:
        """The document's domain (``meta[domain_field]`` as a string), else ``default``."""
        value = self.meta.get(domain_field)
        return default if value is None else str(value)


@dataclass
class CorpusStats:
    """What a read of a corpus saw: usable documents and skipped lines."""

    documents: int = 0
    skipped: int = 0
    first_skips: list = field(default_factory=list)  # up to 100 (line, reason) pairs
    empty: int = 0  # documents with an empty text, skipped

    def skip(self, line: int, reason: str) -> None:
        self.skipped += 1
        if len(self.first_skips) < 100:
            self.first_skips.append((line, reason))


#: the first bytes of a zstd frame (a compressed moetools stream)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _binary(raw: bytes, first: bool) -> str | None:
    """Why the line ``raw`` is binary data rather than text, else None."""
    if first and raw.startswith(_ZSTD_MAGIC):
        return "zstd-compressed data (a moetools stream? read it with moe-cat), not a corpus of text"
    if first and raw[:1] and (0x80 <= raw[0] <= 0x8F or raw[0] in (0xDE, 0xDF)) and b"type" in raw[:16]:
        return "a msgpack moetools stream, not a corpus of text"
    if b"\0" in raw:
        return "binary data (a NUL byte), not a corpus of text"
    return None


def read_documents(source: BinaryIO, *, name: str, text_field: str = "text", id_field: str = "id",
                   bad_lines: str = "skip", on_skip: Callable[[int, str], None] | None = None,
                   stats: CorpusStats | None = None, on_empty: Callable[[int], None] | None = None,
                   warn: Log | None = log_warning) -> Iterator[Document]:
    """Documents of a JSON-lines or plain-text corpus read from a binary file object (the rule above).

    ``on_empty(line_number)`` sees each empty document skipped; ``warn`` (None: silent) gets one line
    counting them and one counting the unusable lines (the first named), at the end of the read.
    """
    if bad_lines not in BAD_LINE_POLICIES:
        raise UsageError(f"unknown bad-line policy {bad_lines!r} (choose from {', '.join(BAD_LINE_POLICIES)})")
    stats = stats if stats is not None else CorpusStats()

    def skip(line_number: int, reason: str) -> None:
        if bad_lines == "fail":
            raise UsageError(f"{name}:{line_number}: {reason}")
        stats.skip(line_number, reason)
        if on_skip is not None:
            on_skip(line_number, reason)

    mode = None
    index = 0
    for line_number, raw in enumerate(source, start=1):
        binary = _binary(raw, line_number == 1)
        if binary is not None:
            raise FormatError(f"{name}:{line_number}: {binary}")
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as error:
            if mode is None:  # the first line that holds anything: binary data or another encoding
                raise FormatError(f"{name}:{line_number}: invalid UTF-8 at byte {error.start}: binary data or "
                                  "another encoding, not a corpus of UTF-8 text") from None
            skip(line_number, f"invalid UTF-8 at byte {error.start}")
            continue
        if not line.strip():
            continue
        if mode is None:
            mode = "jsonl" if line.lstrip().startswith("{") else "text"
        if mode == "text":
            document = Document(index, line_number, f"{name}:{line_number}", line)
        else:
            obj, problem = read_object(line)
            if problem:
                skip(line_number, problem)
                continue
            text = obj.pop(text_field, None)
            if not isinstance(text, str):
                skip(line_number, f"no string field {text_field!r} (choose it with --text-field)")
                continue
            if not text.strip():
                stats.empty += 1
                if on_empty is not None:
                    on_empty(line_number)
                continue
            doc_id = obj.pop(id_field, None)
            doc_id = f"{name}:{line_number}" if doc_id is None else str(doc_id)
            document = Document(index, line_number, doc_id, text, obj)
        index += 1
        stats.documents += 1
        yield document
    _finish(stats, name, text_field, warn)


def _finish(stats: CorpusStats, name: str, text_field: str, warn: Log | None) -> None:
    """The end of a read: one warning per kind of skip, and the refusal when no document is left."""
    first = f", the first at line {stats.first_skips[0][0]}: {stats.first_skips[0][1]}" if stats.first_skips else ""
    if not stats.documents:
        if stats.skipped:
            raise FormatError(f"{name}: no usable documents in the corpus ({stats.skipped} lines skipped{first})")
        if stats.empty:
            raise EmptyInputError(f"{name}: empty input: all {stats.empty} documents have an empty {text_field!r}")
        raise EmptyInputError(f"{name}: empty input: no documents")
    if warn is not None and stats.empty:
        warn(f"{name}: skipped {stats.empty} empty document(s) (empty {text_field!r}); "
             f"{stats.documents} document(s) read")
    if warn is not None and stats.skipped:
        warn(f"{name}: skipped {stats.skipped} unusable line(s){first}")


def read_corpus(path, *, text_field: str = "text", id_field: str = "id", bad_lines: str = "skip",
                on_skip: Callable[[int, str], None] | None = None, stats: CorpusStats | None = None,
                on_empty: Callable[[int], None] | None = None, warn: Log | None = log_warning) -> Iterator[Document]:
    """:func:`read_documents` on a path (``-`` is stdin); the file is closed when iteration ends."""
    name = "stdin" if is_stdio(path) else str(path)
    source = open_input(path)
    try:
        yield from read_documents(source, name=name, text_field=text_field, id_field=id_field,
                                  bad_lines=bad_lines, on_skip=on_skip, stats=stats, on_empty=on_empty, warn=warn)
    finally:
        if not is_stdio(path):
            source.close()


def read_json_objects(path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSON-lines file that is not a corpus of texts
    (moe-tune's chat files, moe-eval's multiple-choice items). The first bad line raises
    :class:`UsageError` naming ``FILE:LINE`` with the reasons :func:`read_documents` gives (fail policy).
    """
    name = "stdin" if is_stdio(path) else str(path)
    source = open_input(path)
    try:
        for line_number, raw in enumerate(source, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise UsageError(f"{name}:{line_number}: invalid UTF-8 at byte {error.start}") from None
            if not line.strip():
                continue
            obj, problem = read_object(line)
            if problem:
                raise UsageError(f"{name}:{line_number}: {problem}")
            yield line_number, obj
    finally:
        if not is_stdio(path):
            source.close()


__all__ = ["BAD_LINE_POLICIES", "CorpusStats", "Document", "read_corpus", "read_documents", "read_json_objects"]
