"""The scorer prompt of paper 000, Appendix A.2, verbatim, and the parser of its answers.

Source: *Exploring Expert Monosemanticity in MoE LLMs*, Appendix A.2 "Explanation Evaluation
Prompts" (papers/000_*.txt, "Full Details of Explanation Evaluation Prompts"). The system and user
texts below are copied word for word; the only edits are undoing the PDF's line breaks and page
numbers. ``{examples}`` "is a set of numbered samples, where each sample is shown in its original
form without << >> indicating activated tokens": one line ``Example N: <text>`` per sample, in a
seeded random order (the system text says "in random order"), newlines written as ``\\n``.

One addition, because the paper's user part does not show the explanation that its system part
promises ("You will be given a short explanation of what this expert specializes in"): the user
message starts with ``Here is the explanation: <label>`` (the wording of P_mono's user part, A.1.1),
then the paper's user text. :data:`EXPLANATION_LINE` is that line.

Answers: "a comma-separated list of numbers or the word None". :func:`parse_answer` accepts
exactly that (white space, surrounding quotes and one final period tolerated); anything else, and
any number outside 1..N, is a parse failure (the caller asks again, then records a failure; an
answer is never guessed).

The yes/no form (``moe-score --judge-prompt yes-no``, not the paper's; recorded in the scores header's
``scorer.prompt`` and ``scorer.form``) asks one question per sample, for small local models that do
not answer with a list of numbers: :data:`YES_NO_SYSTEM`, :data:`YES_NO_USER`, :func:`parse_yes_no`.
"""

from __future__ import annotations

import re

#: paper 000, A.2, System
SCORER_SYSTEM = (
    "We're studying experts in a large-scale Mixture of Experts (MoE) language model. Each expert in the MoE "
    "layers specializes in processing certain types of content, knowledge domains, linguistic patterns, or "
    "reasoning tasks."
    "\n\n"
    "You will be given a short explanation of what this expert specializes in, and then be shown N example "
    "sequences in random order."
    "\n\n"
    "You will have to return a comma-separated list of the examples where you think this expert should be "
    "activated by the router, based on the content type, domain knowledge, or linguistic characteristics "
    "required."
    "\n\n"
    "For example, your response might look like \"1, 3, 5\"."
    "\n\n"
    "Try not to be overly specific in your interpretation of the explanation."
    "\n\n"
    "If you think there are no examples where this expert will be significantly activated, you should just "
    "respond with \"None\"."
    "\n\n"
    "You should include nothing else in your response other than comma-separated numbers or the word "
    "\"None\" - this is important."
)

#: paper 000, A.2, User
SCORER_USER = "The documents which this expert is activated are given below:\n\n{examples}"

#: our addition (see the module docstring): the label the scorer is to judge by
EXPLANATION_LINE = "Here is the explanation: {explanation}"

_LIST = re.compile(r"^\d+(\s*,\s*\d+)*$")


def context_text(context: dict) -> str:
    """A sample "in its original form": its pieces joined, no ``<< >>`` marks, one line."""
    text = "".join(str(piece) for piece in context.get("pieces") or [])
    return text.replace("\r", "\\r").replace("\n", "\\n")


def format_samples(contexts: list[dict]) -> str:
    return "\n".join(f"Example {number}: {context_text(context)}" for number, context in enumerate(contexts, 1))


def build_scorer_messages(explanation: str, contexts: list[dict]) -> list[dict]:
    """System + user messages asking which of ``contexts`` (already in the order shown) activate the expert."""
    user = EXPLANATION_LINE.format(explanation=explanation) + "\n\n" + \
        SCORER_USER.format(examples=format_samples(contexts))
    return [{"role": "system", "content": SCORER_SYSTEM}, {"role": "user", "content": user}]


def parse_answer(text: str | None, n: int) -> tuple[set[int] | None, str | None]:
    """``(numbers chosen, 1-based; None on failure, why)`` for an answer about ``n`` samples."""
    if text is None:
        return None, "no answer"
    answer = text.strip().strip("\"'`").strip().removesuffix(".").strip()
    if answer.lower() == "none":
        return set(), None
    if not _LIST.match(answer):
        return None, f"not a comma-separated list of numbers or \"None\": {text.strip()[:80]!r}"
    numbers = {int(part) for part in answer.split(",")}
    outside = sorted(number for number in numbers if not 1 <= number <= n)
    if outside:
        return None, f"number {outside[0]} is outside 1..{n}"
    return numbers, None


# -- the yes/no form (``--judge-prompt yes-no``; not the paper's): one question per sample ----------------------

#: for small local models that cannot answer with a list of numbers: one sample per request
YES_NO_SYSTEM = ("You check whether a description of one part of a language model fits a text. Answer with one "
                 "word: yes or no.")
YES_NO_USER = "Description: {explanation}\n\nText: {text}\n\nDoes the description fit the text? Answer yes or no."
YES_NO_DESCRIPTION = "yes/no per sample (compact form for small models; not paper 000's A.2 list)"


def build_yes_no_messages(explanation: str, context: dict) -> list[dict]:
    """System + user messages asking whether ``explanation`` fits one sample (shown without marks)."""
    return [{"role": "system", "content": YES_NO_SYSTEM},
            {"role": "user", "content": YES_NO_USER.format(explanation=explanation, text=context_text(context))}]


def parse_yes_no(text: str | None) -> tuple[bool | None, str | None]:
    """``(True/False, None)`` for an answer whose first word is yes or no (case, quotes, punctuation tolerated)."""
    words = re.findall(r"[a-z]+", (text or "").lower())
    if words and words[0] in ("yes", "no"):
        return words[0] == "yes", None
    return None, f"not yes or no: {(text or '').strip()[:80]!r}"


__all__ = [
    "EXPLANATION_LINE",
    "SCORER_SYSTEM",
    "SCORER_USER",
    "YES_NO_DESCRIPTION",
    "YES_NO_SYSTEM",
    "YES_NO_USER",
    "build_scorer_messages",
    "build_yes_no_messages",
    "context_text",
    "format_samples",
    "parse_answer",
    "parse_yes_no",
]
