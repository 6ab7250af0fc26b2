"""Extracting the "This expert specializes in ..." sentence from an explainer's answer.

Paper 000's prompts ask for a response "in the form 'This expert specializes in...'"
(Appendix A.1.1). Explainers wrap it in chatter, quotes or markdown; this finds
the sentence and returns it cleaned, or None when the answer holds no such
sentence (then moe-explain asks again and finally records the raw answer as a
failure — it never makes a label up).
"""

from __future__ import annotations

import re

_PHRASE = re.compile(r"\b(?:this|the)\s+expert\s+speciali[sz]es\s+in\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)[.!?](?=\s|$)|\n")
_MIN_WORDS = 1
_DANGLING = frozenset({"a", "an", "the", "of", "in", "on", "at", "to", "for", "with", "by", "from", "and", "or",
                       "as", "such", "like", "including", "its", "their"})
_QUOTES = "\"'“‘«"
_CLOSING = {"“": "”", "‘": "’", "«": "»"}


def parse_explanation(text: str | None) -> str | None:
    """``"This expert specializes in X"`` from ``text``, or None when malformed.

    Malformed: no such phrase, nothing after it, only the prompt's placeholder
    ("This expert specializes in..."), or a sentence cut off after a function word
    ("... the pattern of").
    """
    if not text:
        return None
    cleaned = text.replace("**", "").replace("__", "").replace("`", "")
    match = _PHRASE.search(cleaned)
    if match is None:
        return None
    rest = cleaned[match.end():]
    before = cleaned[: match.start()].rstrip()
    if before and before[-1] in _QUOTES:  # a quoted answer ends at its closing quote
        closing = _CLOSING.get(before[-1], before[-1])
        if closing in rest:
            rest = rest[: rest.index(closing)]
    end = _SENTENCE_END.search(rest)
    body = rest[: end.start()] if end else rest
    body = body.strip().strip("\"'“”‘’ ").rstrip(".,;:!?\"'“”‘’ ").strip()
    body = re.sub(r"\s+", " ", body)
    if not body or body in ("...", "…") or body.startswith(("...", "…")) or len(body.split()) < _MIN_WORDS:
        return None
    if not re.search(r"[A-Za-z0-9]", body):
        return None
    if body.split()[-1].lower() in _DANGLING:  # cut off mid-sentence ("... the pattern of")
        return None
    return f"This expert specializes in {body}"
