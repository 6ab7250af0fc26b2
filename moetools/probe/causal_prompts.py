"""The trigger/target proposals of ``moe-probe causal``: the LLM prompt, its strict parser, the offline fallback.

Paper 002's trigger/target check: from a label alone, propose text that should route to the
expert (triggers) and tokens it should promote (targets). The LLM answers one JSON object;
anything else is refused with a reason and asked again (the reason is sent back), never guessed.
The offline fallback (method ``offline-label-evidence-v1``) reads only what moe-explain's
offline labels carry (formats/labels.md ``details``): triggers = the expert's top activating
token pieces (one trigger per piece, plus all of them joined), targets = its logit-lens pieces.
"""

from __future__ import annotations

import json
import re

CACHE_NAMESPACE = "probe"
OFFLINE_METHOD = "offline-label-evidence-v1"
DEFAULT_TRIGGERS = 4
DEFAULT_TARGETS = 4
MAX_TRIGGER_CHARS = 400
MAX_TARGET_CHARS = 40

SYSTEM = (
    "We're studying experts in a Mixture-of-Experts (MoE) language model. Each expert in an MoE layer specializes in "
    "certain content, and when it is active it pushes the model towards certain next tokens.\n\n"
    "You will be given a short explanation of what one expert specializes in. Propose {triggers} short trigger "
    "texts (one sentence or code line each, at most 30 words) on which the router should send tokens to this "
    "expert, and {targets} target tokens (each a single word, number or symbol, no spaces inside) that this "
    "expert should make more likely as the next token.\n\n"
    "Reply with one JSON object and nothing else, exactly in this form:\n"
    "{{\"triggers\": [\"...\", \"...\"], \"targets\": [\"...\", \"...\"]}}")
USER = "Explanation of the expert: <<{explanation}>>"
RETRY = "Your answer could not be used: {reason}. Reply with the JSON object only, in the form asked for."


def build_messages(explanation: str, triggers: int = DEFAULT_TRIGGERS, targets: int = DEFAULT_TARGETS) -> list[dict]:
    return [{"role": "system", "content": SYSTEM.format(triggers=triggers, targets=targets)},
            {"role": "user", "content": USER.format(explanation=explanation)}]


def retry_messages(messages: list[dict], answer: str, reason: str) -> list[dict]:
    """The conversation asked again: the refused answer and why it was refused."""
    return messages + [{"role": "assistant", "content": answer}, {"role": "user", "content": RETRY.format(reason=reason)}]


_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.DOTALL)


def parse_answer(text: str, triggers: int = DEFAULT_TRIGGERS, targets: int = DEFAULT_TARGETS):
    """(triggers, targets) from an answer, or (None, reason). Only a JSON object (in one ```json fence at most)."""
    body = (text or "").strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        value = json.loads(body)
    except ValueError:
        return None, "it is not a JSON object"
    if not isinstance(value, dict) or set(value) != {"triggers", "targets"}:
        return None, 'it must be an object with exactly the keys "triggers" and "targets"'
    found = {}
    for key, most, longest in (("triggers", triggers, MAX_TRIGGER_CHARS), ("targets", targets, MAX_TARGET_CHARS)):
        items = value[key]
        if not isinstance(items, list) or not items or not all(isinstance(item, str) and item.strip() for item in items):
            return None, f'"{key}" must be a non-empty list of non-empty strings'
        if len(items) > most:
            return None, f'"{key}" has {len(items)} entries, at most {most} were asked for'
        if any(len(item) > longest for item in items):
            return None, f'an entry of "{key}" is longer than {longest} characters'
        found[key] = [item.strip() for item in items]
    if any(re.search(r"\s", target) for target in found["targets"]):
        return None, "a target contains white space (each target must be a single token-like word or symbol)"
    return (found["triggers"], found["targets"]), None


def offline_proposal(label: dict, triggers: int = DEFAULT_TRIGGERS, targets: int = DEFAULT_TARGETS):
    """(triggers, targets) from the label's own evidence, or (None, reason) when it carries none."""
    details = label.get("details") or {}
    pieces = [str(row["piece"]) for row in details.get("tokens") or [] if isinstance(row, dict) and
              str(row.get("piece", "")).strip()][:triggers]
    lens = [str(piece) for piece in details.get("logit_lens") or [] if str(piece).strip()][:targets]
    if not pieces or not lens:
        return None, ("offline fallback: the label carries no details.tokens and details.logit_lens "
                      "(moe-explain --backend offline on samples with logit lens writes them)")
    found = [piece.strip() for piece in pieces]
    if len(found) > 1:
        found.append(" ".join(found))
    return (found, lens), None
