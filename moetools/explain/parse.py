"""Extracting the "This expert specializes in ..." sentence from an explainer's answer.

Paper 000's prompts ask for a response "in the form 'This expert specializes in...'"
(Appendix A.1.1). Explainers wrap it in chatter, quotes or markdown; this finds
the sentence and returns it cleaned, or says why the answer holds no usable one
(then moe-explain asks again and finally records the raw answer as a failure — it
never makes a label up).

Not a label (each seen from real servers, each a test case): the phrase found
mid-clause ("... understand what this expert specializes in and provide a list"),
a sentence that only introduces a list ("... in the following tasks:"), no specific
content ("... in the following topics", "... in processing certain types of
content"), the prompt's ``<< >>`` marks or an unbalanced bracket kept, a sentence
cut off after a function word ("... the pattern of"), and an answer the server cut
off at ``max_tokens`` (``finish_reason: "length"``) before its first sentence ended.

A label must name a property of what the expert fires on. Two more rules, each seen from SmolLM2
(tests/explain/test_explain.py lists the real answers): a body that **restates the prompt** — it holds
:data:`RESTATED_WORDS` or more consecutive words of the explanation prompt (P_mono or the compact form,
:mod:`moetools.explain.prompts`), as "a list of documents on which the expert is activated by the
router" or "all the content that activates the expert" — and a body that **names no property** —
every word is a function word, a word of no specific content or a word about the task itself
(:data:`ABOUT_THE_TASK`: explanation, summary, text, document, expert, router, information,
content, ...), as "This explanation is a summary of the previous one", "this text" or
"information processing" — are failed parses.

An answer without the phrase (a server that does not continue a prefilled answer)
is read as the label's body when its first sentence is a short description
("Python import statements.", "It handles legal citations."), never when it is
chatter ("Sure, here is ...") or an essay.
"""

from __future__ import annotations

import re

from .prompts import COMPACT_SYSTEM, COMPACT_USER, MONO_SYSTEM, MONO_USER

NOT_A_LABEL = "answer has no \"This expert specializes in ...\" sentence"

_PHRASE = re.compile(r"\b(?:this|the)\s+expert\s+speciali[sz]es\s+in\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)[.!?](?=\s|$)|\n")
_DANGLING = frozenset({"a", "an", "the", "of", "in", "on", "at", "to", "for", "with", "by", "from", "and", "or",
                       "as", "such", "like", "including", "its", "their"})
#: a sentence starting with one of these continues a clause ("... specializes in and provide a list")
_CLAUSE_WORDS = frozenset({"and", "or", "but", "what", "which", "that", "provide", "providing", "then", "so"})
#: words that say nothing about what an expert does ("the following topics", "certain types of content")
_GENERIC = _DANGLING | frozenset({
    "following", "topics", "topic", "tasks", "task", "things", "thing", "types", "type", "kinds", "kind", "content",
    "areas", "area", "various", "different", "certain", "specific", "many", "several", "some", "list", "below",
    "above", "these", "those", "this", "that", "processing", "handling", "general", "domains", "domain", "it",
    "is", "are", "here", "ways", "aspects"})
#: words about the task, the prompt or the model rather than about what an expert fires on
ABOUT_THE_TASK = frozenset({
    "explanation", "explanations", "summary", "summaries", "previous", "one", "ones", "text", "texts", "document",
    "documents", "example", "examples", "expert", "experts", "router", "routed", "activated", "activates",
    "activate", "activating", "activation", "information", "all", "which", "what", "whatever", "every", "each",
    "input", "inputs", "data", "token", "tokens", "word", "words", "sentence", "sentences", "marked", "parts",
    "part", "given", "shown", "above", "model", "language", "specializes", "specialized", "has", "have", "be",
    "was", "were", "been", "other", "same", "not", "no", "any", "whole", "entire", "stuff", "something"})
#: this many consecutive words of the explanation prompt in a label's body: it restates the prompt
RESTATED_WORDS = 4


def _words(text: str) -> list[str]:
    return [word for word in (re.sub(r"[^\w]", "", piece.lower()) for piece in text.split()) if word]


def _prompt_runs(texts: tuple[str, ...], n: int) -> frozenset[tuple[str, ...]]:
    """Every run of ``n`` consecutive words of the prompt texts holding at least two words that are not function words."""
    runs = set()
    for text in texts:
        words = _words(text)
        for start in range(len(words) - n + 1):
            run = tuple(words[start:start + n])
            if sum(word not in _DANGLING for word in run) >= 2:
                runs.add(run)
    return frozenset(runs)


_PROMPT_RUNS = _prompt_runs((MONO_SYSTEM, MONO_USER, COMPACT_SYSTEM, COMPACT_USER), RESTATED_WORDS)


def restates_prompt(body: str) -> bool:
    """Whether ``body`` holds RESTATED_WORDS consecutive words of the explanation prompt."""
    words = _words(body)
    return any(tuple(words[start:start + RESTATED_WORDS]) in _PROMPT_RUNS
               for start in range(len(words) - RESTATED_WORDS + 1))


def names_no_property(body: str) -> bool:
    """Whether every word of ``body`` is a function word, a generic word or a word about the task."""
    return all(word in _GENERIC or word in ABOUT_THE_TASK for word in _words(body))


_QUOTES = "\"'“‘«"
_CLOSING = {"“": "”", "‘": "’", "«": "»"}
_LEAD_IN = " \t\"'“‘«*#>-"


def _starts_a_sentence(before: str) -> bool:
    """Whether text ending in ``before`` leaves the phrase at the start of a sentence, line or quote."""
    stripped = before.rstrip(_LEAD_IN)
    return not stripped or stripped[-1] in ".!?:\n" or stripped.endswith(("Answer", "answer"))


def check_explanation(text: str | None, truncated: bool = False) -> tuple[str | None, str | None]:
    """``("This expert specializes in X", None)``, or ``(None, why it is not a label)``.

    ``truncated``: the answer was cut off at ``max_tokens`` (its first sentence must have ended).
    """
    if not text:
        return None, NOT_A_LABEL
    cleaned = text.replace("**", "").replace("__", "").replace("`", "")
    match = next((found for found in _PHRASE.finditer(cleaned) if _starts_a_sentence(cleaned[: found.start()])), None)
    if match is None:
        if _PHRASE.search(cleaned):
            return None, NOT_A_LABEL + " (the phrase only appears mid-sentence)"
        return _without_the_phrase(cleaned, truncated)
    rest = cleaned[match.end():]
    before = cleaned[: match.start()].rstrip()
    if before and before[-1] in _QUOTES:  # a quoted answer ends at its closing quote
        closing = _CLOSING.get(before[-1], before[-1])
        if closing in rest:
            rest = rest[: rest.index(closing)]
    return _label_from(rest, truncated)


def _label_from(rest: str, truncated: bool) -> tuple[str | None, str | None]:
    """The label whose body is the first sentence of ``rest`` (the text after the phrase)."""
    end = _SENTENCE_END.search(rest)
    raw_body = (rest[: end.start()] if end else rest).strip()
    if truncated and end is None and not rest.rstrip().endswith(tuple(_QUOTES + "”’»")):
        return None, NOT_A_LABEL + " (cut off at --max-tokens: finish_reason \"length\")"
    body = raw_body.strip("\"'“”‘’ ").rstrip(".,;:!?\"'“”‘’ ").strip()
    body = re.sub(r"\s+", " ", body)
    if not body or body.startswith(("...", "…")) or not re.search(r"[A-Za-z0-9]", body):
        return None, NOT_A_LABEL
    words = body.split()
    why = None
    if raw_body.rstrip().endswith(":"):
        why = "it only introduces a list"
    elif words[0].lower() in _CLAUSE_WORDS:
        why = "the phrase continues a clause"
    elif "<<" in body or ">>" in body:
        why = "it keeps the prompt's << >> marks"
    elif body.count("(") != body.count(")") or body.count("[") != body.count("]"):
        why = "unbalanced brackets"
    elif words[-1].lower() in _DANGLING:  # cut off mid-sentence ("... the pattern of")
        why = "it ends in a function word"
    elif all(re.sub(r"[^\w]", "", word.lower()) in _GENERIC for word in words):
        why = "no specific content"
    elif restates_prompt(body):
        why = "it restates the prompt"
    elif names_no_property(body):
        why = "it names no property of the text the expert fires on"
    if why is not None:
        return None, f"{NOT_A_LABEL} ({why})"
    return f"This expert specializes in {body}", None


#: an answer that says the same thing in other words ("It specializes in X", "This expert handles X")
_OTHER_PHRASING = re.compile(
    r"^(?:(?:this|the)\s+expert|it)?\s*(?:speciali[sz]es\s+in|is\s+speciali[sz]ed\s+in|focuses\s+on|handles|"
    r"processes|responds\s+to|fires\s+on|activates\s+on|detects)\s+", re.IGNORECASE)
#: first words of chatter, not of a description ("Sure, here is ...", "I think ...", "Based on ...")
_CHATTER = re.compile(r"^(?:sure|ok(?:ay)?|certainly|here|i|i'm|i'd|based|looking|after|from|these|the\s+examples|"
                      r"the\s+tokens|the\s+text|answer|explanation|to|in\s+summary|overall)\b", re.IGNORECASE)
#: a description is short; a longer first sentence is an essay, not a label
MAX_FALLBACK_WORDS = 25


def _without_the_phrase(cleaned: str, truncated: bool) -> tuple[str | None, str | None]:
    """A well-formed first sentence without the prefix, read as the label's body (issue: servers that do not
    continue the prefilled answer write "Python import statements." or "It handles legal citations.").

    Accepted only when it reads as a description: not chatter, at most MAX_FALLBACK_WORDS words, and the same
    checks as a prefixed answer; otherwise the answer is not a label.
    """
    first = cleaned.strip().lstrip(_LEAD_IN).strip()
    other = _OTHER_PHRASING.match(first)
    if other is not None:
        first = first[other.end():]
    elif _CHATTER.match(first):
        return None, NOT_A_LABEL
    end = _SENTENCE_END.search(first)
    if len(((first[: end.start()] if end else first)).split()) > MAX_FALLBACK_WORDS:
        return None, NOT_A_LABEL
    label, why = _label_from(first, truncated)
    return (label, None) if label is not None else (None, why or NOT_A_LABEL)


def parse_explanation(text: str | None, truncated: bool = False) -> str | None:
    """The label in ``text``, or None when it holds none (see :func:`check_explanation`)."""
    return check_explanation(text, truncated)[0]
