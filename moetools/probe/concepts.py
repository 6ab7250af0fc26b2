"""Binary token concepts that exist offline, for k-sparse probing (paper 002 probes 58 concepts).

Each concept labels every token of a window 1 or 0. Token classes are read from the
token's own decoded text (the text stripped of surrounding white space, unless said
otherwise); ``line_start`` also looks at the token before; ``domain:<d>`` is a label of
the whole document (its corpus ``domain`` meta field), so every token of a code
document is positive for ``domain:code``.
"""

from __future__ import annotations

import keyword
import unicodedata
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError

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


class ConceptLabeller:
    """Labels (T, C) bool for the tokens of a window; token texts decoded once per vocabulary id."""

    def __init__(self, tokenizer, domains=DEFAULT_DOMAINS, only: tuple[str, ...] | None = None):
        self.tokenizer = tokenizer
        concepts = list(TOKEN_CONCEPTS) + [domain_concept(domain) for domain in domains]
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
               previous_text: str | None = None) -> np.ndarray:
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
        labels = np.zeros((count, len(self.concepts)), dtype=bool)
        for column, concept in enumerate(self.concepts):
            if concept.name.startswith("domain:"):
                labels[:, column] = str(domain) == concept.name[len("domain:"):]
            else:
                labels[:, column] = columns[concept.name]
        return labels
