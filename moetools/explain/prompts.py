"""The explanation prompts P_mono and P_domain(d), verbatim from paper 000 Appendix A.1.1.

Source: *Exploring Expert Monosemanticity in MoE LLMs*, Appendix A.1.1 "Explanation
Generation Prompts: P_mono and P_domain(d)" (papers/000_*.txt, lines 711-428ff).
The texts below are copied word for word; the only edits are undoing the PDF's
line breaks (e.g. "indicated with\\n\\n<< ... >>." is one sentence).

- P_mono: a system message and a user message whose ``{examples}`` are the
  activating documents "in order from most strongly activating to least strongly
  activating", activating tokens marked with ``<< >>``.
- P_domain(d): "includes all the content of P_mono. Additionally ... we add the
  following prompt on the basis of P_mono" — the domain text is appended to the
  system message. The medical and legal texts are built in; a user's own domain
  comes from a file (:func:`load_domain`).

The compact form (``--prompt-form compact``; not the paper's, recorded as ``prompt.form`` in every
label) is for small local models whose answers the paper's 400-word instructions drown:
:data:`COMPACT_SYSTEM`, at most :data:`COMPACT_EXAMPLES` examples each cut to :data:`COMPACT_WINDOW`
tokens around the strongest activation, and one question; the answer's start "This expert
specializes in" is pre-filled where the backend can (``local``; ``openai`` with
``continue_final_message``).

Paper 002 (*The Expert Strikes Back*) also shows the explainer the top-3 tokens
each expert promotes through the logit lens; when the samples carry them they are
added after the examples (:data:`LOGIT_LENS_LINE`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..streams.strict_json import read_object

#: P_mono, System (paper 000, A.1.1 "Full Details of P_mono")
MONO_SYSTEM = (
    "We're studying experts in a large-scale Mixture of Experts (MoE) language model. Each expert specializes "
    "in processing certain types of content, knowledge domains, linguistic patterns, or reasoning tasks in "
    "documents. The content that activates each expert in documents is indicated with << ... >>. We will give "
    "you a list of documents on which the expert is activated by the router, in order from most strongly "
    "activating to least strongly activating. Look at the parts of the document the expert activates for and "
    "summarize in a single sentence what type of content or domain this expert specializes in. Provide a "
    "reasonable explanation that captures the key distinguishing features. Note that some experts will "
    "specialize in very specific linguistic patterns or substrings, but others will activate on broader "
    "content types provided that the text contains particular knowledge domains or reasoning patterns. Your "
    "explanation should cover the general specialization pattern across most or all activating content (for "
    "example, don't give an explanation specific to a single domain if the expert activates across multiple "
    "related areas). Pay attention to things like the subject matter, linguistic style, technical "
    "complexity, or reasoning type of the activating content, if that seems relevant. Keep the explanation as "
    "short and simple as possible, limited to 20 words or fewer. Omit punctuation and formatting. You should "
    "avoid giving long lists of specific topics. Include specific details about the semantic patterns, "
    "syntactic structures, or functional roles that characterize this expert's specialization. Mention key "
    "distinguishing features such as specific word types, grammatical constructions, or conceptual themes."
    "\n\n"
    "Your response should be in the form \"This expert specializes in...\""
)

#: P_mono, User; ``{examples}`` "refers to our sampled activation examples, with activated tokens marked using <<>>"
MONO_USER = "Here is the explanation: this expert specializes in\n\nHere are the examples:\n{examples}"

#: the compact form for small local models (``--prompt-form compact``; not the paper's): a short system
#: message, few short examples, the answer's start pre-filled where the backend can
COMPACT_SYSTEM = ("You describe what one part of a language model reacts to. The words it reacts to are marked "
                  "<< >>. Answer with one short sentence that names what the marked words have in common: a topic, "
                  "a kind of word or a pattern.")
COMPACT_USER = "{examples}\n\nWhat do the marked words have in common?"
#: the compact form shows at most this many examples, each cut to this many pieces around its strongest token
COMPACT_EXAMPLES = 6
COMPACT_WINDOW = 16

RESPONSE_FORM = "Your response should be in the form \"This expert specializes in...\""

#: the markers around activating tokens (paper 000: "indicated with << ... >>")
OPEN_MARK, CLOSE_MARK = "<<", ">>"

#: paper 002: "the top-3 tokens promoted by the Logit Lens" shown with the contexts
LOGIT_LENS_LINE = "Top tokens promoted by this expert (logit lens): {tokens}"


@dataclass(frozen=True)
class Domain:
    """The P_domain(d) addition for one domain d: focus, IMPORTANT line, example answers."""

    name: str
    focus: str
    important: str
    examples: tuple[str, ...] = ()
    text: str | None = None  # a user's complete addition, used as is instead of the three parts

    def system_addition(self) -> str:
        """The text P_domain(d) adds to P_mono's system message, in the paper's order."""
        if self.text is not None:
            return self.text.strip()
        parts = [self.focus, "**IMPORTANT:** " + self.important, RESPONSE_FORM]
        if self.examples:
            parts.append("Some examples: " + ", ".join(f'"{example}"' for example in self.examples) + ".")
        return "\n\n".join(parts)

    def as_record(self) -> dict:
        return {"name": self.name, "text": self.system_addition()}


#: "For the medical dataset" (paper 000, A.1.1 "Full Details of P_domain(d)")
MEDICAL = Domain(
    name="medical",
    focus=("This expert processes medical multiple-choice questions and clinical reasoning, so focus on medical "
           "terminology, diagnostic reasoning patterns, clinical decision-making, anatomical concepts, "
           "pharmacological knowledge, pathophysiology, treatment protocols, medical examination patterns, or "
           "healthcare domain knowledge."),
    important=("This expert should ONLY specialize in medical and healthcare content. Do not generate "
               "explanations about non-medical domains."),
    examples=(
        "This expert specializes in differential diagnosis reasoning in multiple-choice contexts",
        "This expert specializes in pharmacological drug mechanism descriptions and interactions",
        "This expert specializes in anatomical structure identification and spatial relationships",
        "This expert specializes in clinical symptom pattern recognition and analysis",
        "This expert specializes in medical procedure descriptions and protocols",
        "This expert specializes in pathophysiology and disease mechanism explanations",
        "This expert specializes in medical terminology and nomenclature",
        "This expert specializes in treatment option evaluation and selection",
    ),
)

#: "For the legal dataset" (paper 000, A.1.1 "Full Details of P_domain(d)")
LEGAL = Domain(
    name="legal",
    focus=("This expert processes legal content and reasoning, so focus on legal terminology, case law analysis, "
           "statutory interpretation, legal argumentation patterns, contractual language, judicial reasoning, "
           "legal precedents, or jurisprudential concepts."),
    important=("This expert should ONLY specialize in legal and jurisprudence content. Do not generate "
               "explanations about non-legal domains."),
    examples=(
        "This expert specializes in contract clause interpretation and analysis",
        "This expert specializes in case law citation and precedent application",
        "This expert specializes in statutory construction and legislative intent",
        "This expert specializes in legal doctrine and principle formulation",
        "This expert specializes in evidentiary reasoning and burden of proof",
        "This expert specializes in constitutional law interpretation",
        "This expert specializes in tort law causation analysis",
        "This expert specializes in criminal law mens rea and actus reus concepts",
    ),
)

BUILTIN_DOMAINS = {"medical": MEDICAL, "legal": LEGAL}


def load_domain(spec: str) -> Domain:
    """A built-in domain name (``medical``, ``legal``) or a file with a user's own domain.

    A ``.json`` file holds ``{"name", "focus", "important", "examples": [...]}``
    (assembled like the built-ins) or ``{"name", "text"}``; any other file is the
    complete text to add to the system message, its name the file's stem.
    """
    if spec in BUILTIN_DOMAINS:
        return BUILTIN_DOMAINS[spec]
    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"unknown domain {spec!r}: use {', '.join(BUILTIN_DOMAINS)} or a file "
                         "(.json with name/focus/important/examples, or plain text)")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"domain file {spec} is not UTF-8 text (byte {error.start}); give a .json or text file") \
            from None
    if path.suffix != ".json":
        if not content.strip():
            raise UsageError(f"domain file {spec} is empty")
        return Domain(name=path.stem, focus="", important="", text=content)
    data, problem = read_object(content)
    if problem:
        raise UsageError(f"domain file {spec}: {problem}")
    name = str(data.get("name") or path.stem)
    if data.get("text"):
        return Domain(name=name, focus="", important="", text=str(data["text"]))
    if not data.get("focus") or not data.get("important"):
        raise UsageError(f"domain file {spec}: needs 'text', or 'focus' and 'important' (and optional 'examples')")
    examples = data.get("examples") or []
    if not isinstance(examples, list) or not all(isinstance(item, str) for item in examples):
        raise UsageError(f"domain file {spec}: 'examples' must be a list of strings")
    return Domain(name=name, focus=str(data["focus"]), important=str(data["important"]), examples=tuple(examples))


def system_prompt(domain: Domain | None = None) -> str:
    """P_mono's system message, or P_domain(d)'s: P_mono's plus the domain addition."""
    if domain is None:
        return MONO_SYSTEM
    return MONO_SYSTEM + "\n\n" + domain.system_addition()


def mark_context(pieces: list[str], activation) -> str:
    """One document with its activating tokens (activation > 0) wrapped in << >>.

    Adjacent activating tokens share one pair of markers, as in ``<<New York>>``.
    Newlines inside a document are written as ``\\n`` so each example stays one line.
    """
    out: list[str] = []
    inside = False
    for piece, value in zip(pieces, activation):
        active = float(value) > 0.0
        if active and not inside:
            out.append(OPEN_MARK)
        elif not active and inside:
            out.append(CLOSE_MARK)
        inside = active
        out.append(piece)
    if inside:
        out.append(CLOSE_MARK)
    return "".join(out).replace("\r", "\\r").replace("\n", "\\n")


def format_examples(contexts: list[dict]) -> str:
    """The ``{examples}`` block: one numbered line per context, in the order given."""
    return "\n".join(f"Example {number}: {mark_context(context['pieces'], context['activation'])}"
                     for number, context in enumerate(contexts, start=1))


def user_prompt(contexts: list[dict], logit_lens: list[str] | None = None) -> str:
    """P_mono's user message with the examples (and, per paper 002, logit-lens tokens) filled in."""
    text = MONO_USER.format(examples=format_examples(contexts))
    if logit_lens:
        text += "\n\n" + LOGIT_LENS_LINE.format(tokens=", ".join(json.dumps(piece, ensure_ascii=False)
                                                                 for piece in logit_lens))
    return text


def clip_context(context: dict, window: int = COMPACT_WINDOW) -> dict:
    """``context`` cut to ``window`` pieces around its strongest activating token (for the compact form)."""
    pieces, activation = list(context["pieces"]), [float(value) for value in context["activation"]]
    if len(pieces) <= window:
        return context
    strongest = max(range(len(activation)), key=lambda index: (activation[index], -index))
    start = min(max(0, strongest - window // 2), len(pieces) - window)
    return {**context, "pieces": pieces[start:start + window], "activation": activation[start:start + window]}


def build_compact_messages(contexts: list[dict], logit_lens: list[str] | None = None) -> list[dict]:
    """The compact form (``--prompt-form compact``, not the paper's): COMPACT_SYSTEM, then at most
    COMPACT_EXAMPLES examples clipped to COMPACT_WINDOW pieces, marked like P_mono's, and the question."""
    user = format_examples([clip_context(context) for context in contexts[:COMPACT_EXAMPLES]])
    if logit_lens:
        user += "\n" + LOGIT_LENS_LINE.format(tokens=", ".join(json.dumps(piece, ensure_ascii=False)
                                                               for piece in logit_lens))
    return [{"role": "system", "content": COMPACT_SYSTEM}, {"role": "user", "content": COMPACT_USER.format(examples=user)}]


def build_messages(contexts: list[dict], domain: Domain | None = None,
                   logit_lens: list[str] | None = None) -> list[dict]:
    """The chat messages of P_mono (``domain=None``) or P_domain(d)."""
    return [{"role": "system", "content": system_prompt(domain)},
            {"role": "user", "content": user_prompt(contexts, logit_lens)}]
