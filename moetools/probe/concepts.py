"""Binary token concepts that exist offline, for k-sparse probing (paper 002 probes 58 concepts).

Each concept labels every token of a window 1 or 0. Token classes are read from the
token's own decoded text (the text stripped of surrounding white space, unless said
otherwise); ``line_start`` also looks at the token before; ``domain:<d>`` is a label of
the whole document (its corpus ``domain`` meta field), so every token of a code
document is positive for ``domain:code``.
"""

from __future__ import annotations

import json
import keyword
import unicodedata
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..streams.files import open_text_input

#: the corpus domains of moe-corpus (docs/corpus); each becomes the concept ``domain:<name>``
DEFAULT_DOMAINS = ("code", "legal", "medical", "math", "general", "offensive")


@dataclass(frozen=True)
class Concept:
    name: str
    description: str


TOKEN_CONCEPTS = (
    Concept("digit", "the token's stripped text is non-empty and all decimal digits"),
    Concept("punctuation", "the token's stripped text is non-empty and all Unicode punctuation (category P*)"),
    Concept("capitalised", "the token's stripped text is alphabetic and starts with an upper-case letter"),
    Concept("python_keyword", "the token's stripped text is a Python keyword (keyword.kwlist)"),
    Concept("whitespace", "the token's text is non-empty and only white space (indentation, newlines)"),
    Concept("line_start", "the token starts a line: first token of the document, or the text before it ends "
                          "with a newline"),
)


def domain_concept(domain: str) -> Concept:
    return Concept(f"domain:{domain}", f"the token's document has meta domain {domain!r}")


def token_classes(text: str) -> tuple[bool, bool, bool, bool, bool]:
    """(digit, punctuation, capitalised, python_keyword, whitespace) of one token's decoded text."""
    stripped = text.strip()
    digit = bool(stripped) and all(char.isdecimal() for char in stripped)
    punctuation = bool(stripped) and all(unicodedata.category(char).startswith("P") for char in stripped)
    capitalised = stripped.isalpha() and stripped[0].isupper()
    return digit, punctuation, capitalised, stripped in keyword.kwlist, bool(text) and text.isspace()


def read_concept_file(path) -> dict[str, dict[str, set[int]]]:
    """The user's own per-token labels: {doc_id: {concept: {token positions}}}.

    One JSON object a line: ``{"id": DOC_ID, "labels": {"CONCEPT": [POSITION, ...], ...}}``;
    a position is a 0-based index into the document's tokens as the model's tokenizer
    produces them (special tokens included), every unlisted token is a negative.
    """
    labels: dict[str, dict[str, set[int]]] = {}
    with open_text_input(path) as handle:
        try:
            lines = list(handle)
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not UTF-8 text (a concept file is JSON lines)") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise UsageError(f"{path}:{number}: not valid JSON ({error})") from None
            ok = isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("labels"), dict)
            ok = ok and all(isinstance(name, str) and isinstance(positions, list)
                            and all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in positions)
                            for name, positions in row["labels"].items())
            if not ok:
                raise UsageError(f"{path}:{number}: expected {{\"id\": str, \"labels\": {{concept: [token "
                                 "positions >= 0]}}}}")
            document = labels.setdefault(row["id"], {})
            for name, positions in row["labels"].items():
                document.setdefault(name, set()).update(positions)
    return labels


class ConceptLabeller:
    """Labels (T, C) bool for the tokens of a window; token texts decoded once per vocabulary id."""

    def __init__(self, tokenizer, domains=DEFAULT_DOMAINS, only: tuple[str, ...] | None = None,
                 user_labels: dict[str, dict[str, set[int]]] | None = None):
        self.tokenizer = tokenizer
        self.user_labels = user_labels or {}
        builtin = {concept.name for concept in TOKEN_CONCEPTS} | {f"domain:{domain}" for domain in domains}
        user_names = sorted({name for document in self.user_labels.values() for name in document})
        clash = [name for name in user_names if name in builtin]
        if clash:
            raise UsageError(f"the concept file reuses built-in concept name(s) {', '.join(clash)}")
        concepts = list(TOKEN_CONCEPTS) + [domain_concept(domain) for domain in domains]
        concepts += [Concept(name, "token positions listed in the concept file") for name in user_names]
        if only:
            known = {concept.name for concept in concepts}
            unknown = [name for name in only if name not in known]
            if unknown:
                raise UsageError(f"unknown concept(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
            concepts = [concept for concept in concepts if concept.name in only]
        self.concepts = tuple(concepts)
        self.names = tuple(concept.name for concept in concepts)
        self._texts: dict[int, str] = {}
        self._classes: dict[int, tuple] = {}

    def text(self, token_id: int) -> str:
        if token_id not in self._texts:
            self._texts[token_id] = self.tokenizer.decode([token_id])
        return self._texts[token_id]

    def labels(self, token_ids: np.ndarray, offset: int, meta: dict, domain_field: str = "domain",
               previous_text: str | None = None, doc_id: str | None = None) -> np.ndarray:
        """(T, C) bool for one window starting at token ``offset`` of its document.

        ``previous_text``: the decoded text of the token before the window (None at offset 0).
        """
        count = len(token_ids)
        columns = {}
        classes = np.zeros((count, 5), dtype=bool)
        for position, token in enumerate(token_ids.tolist()):
            if token not in self._classes:
                self._classes[token] = token_classes(self.text(token))
            classes[position] = self._classes[token]
        for column, name in enumerate(("digit", "punctuation", "capitalised", "python_keyword", "whitespace")):
            columns[name] = classes[:, column]
        line_start = np.zeros(count, dtype=bool)
        before = previous_text if offset > 0 else "\n"
        for position, token in enumerate(token_ids.tolist()):
            line_start[position] = before is not None and before.endswith("\n")
            before = self.text(token)
        columns["line_start"] = line_start
        domain = meta.get(domain_field)
        user = self.user_labels.get(doc_id, {})
        labels = np.zeros((count, len(self.concepts)), dtype=bool)
        for column, concept in enumerate(self.concepts):
            if concept.name not in columns and not concept.name.startswith("domain:"):  # the user's concept
                for position in user.get(concept.name, ()):
                    if offset <= position < offset + count:
                        labels[position - offset, column] = True
            elif concept.name.startswith("domain:"):
                labels[:, column] = str(domain) == concept.name[len("domain:"):]
            else:
                labels[:, column] = columns[concept.name]
        return labels
