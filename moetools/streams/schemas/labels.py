"""The ``labels`` stream (formats/labels.md) in code: header, ``label`` records, end record.

Required in a ``label`` record: ``layer``, ``expert``, ``status`` and ``explanation``
(a string exactly when ``status`` is ``"ok"``, null when ``"failed"``): what a scorer
reads. The other fields of formats/labels.md are checked when present.
"""

from __future__ import annotations

from ..schema import (
    Schema,
    field_choice,
    field_int,
    field_list,
    field_map,
    field_number,
    field_str,
    is_int,
    need,
    register_schema,
)

STATUSES = ("ok", "failed")
PROMPT_KINDS = ("mono", "domain", "self", "offline")
PROMPT_FORMS = ("paper", "compact")
EVIDENCE_FLAGS = ("always-on", "rare")
EVIDENCE_COUNTS = ("firing_tokens", "tokens_seen", "contexts", "shown", "activating_positions")
USAGE_COUNTS = ("prompt_tokens", "completion_tokens", "requests", "cache_hits")
ACCOUNTING = ("requests", "cache_hits", "retries", "answer_retries", "length_retries", "failures", "no_examples",
              "labelled", "skipped", "prompt_tokens", "completion_tokens", "max_in_flight")


def check_prompt(prompt: dict | None, place: str) -> None:
    if prompt is None:
        return
    kind = field_choice(prompt, "kind", f"{place} prompt", PROMPT_KINDS)
    domain = field_str(prompt, "domain", f"{place} prompt", optional=True, nullable=True)
    field_choice(prompt, "form", f"{place} prompt", PROMPT_FORMS, optional=True)
    need(kind != "domain" or domain is not None, f"{place} prompt", "kind 'domain' needs its 'domain' name")


def check_evidence(evidence: dict | None, place: str) -> None:
    """formats/labels.md ``evidence``: counts >= 0 (or null), shares in [0, 1] (or null), flag one of two or null."""
    if evidence is None:
        return
    place = f"{place} evidence"
    for name in EVIDENCE_COUNTS:
        if name in evidence and evidence[name] is not None:
            field_int(evidence, name, place)
    for name in ("firing_share", "uniform_share"):
        value = field_number(evidence, name, place, optional=True, nullable=True)
        need(value is None or 0.0 <= value <= 1.0, place, f"'{name}' must be a share in [0, 1], got {value}")
    need("flag" not in evidence or evidence["flag"] is None or evidence["flag"] in EVIDENCE_FLAGS, place,
         f"'flag' is {evidence.get('flag')!r}, not one of {', '.join(EVIDENCE_FLAGS)} or null")


def check_explainer(explainer: dict | None, place: str) -> None:
    if explainer is None:
        return
    field_str(explainer, "backend", f"{place} explainer")
    field_str(explainer, "model", f"{place} explainer", optional=True, nullable=True)
    field_str(explainer, "method", f"{place} explainer", optional=True)


@register_schema
class LabelsSchema(Schema):
    kind = "labels"
    record_types = ("label",)

    def check_header(self, header: dict) -> None:
        explain = field_map(header, "explain", "labels header", optional=True)
        if explain is not None:
            check_explainer(field_map(explain, "explainer", "labels header explain", optional=True),
                            "labels header explain")
            check_prompt(field_map(explain, "prompt", "labels header explain", optional=True),
                         "labels header explain")
            field_str(explain, "domain_text", "labels header explain", optional=True)

    def check_label(self, record: dict, header: dict, number: int | None = None) -> None:
        place = f"label record{'' if number is None else f' {number}'}"
        layer = field_int(record, "layer", place)
        model = header.get("model") if isinstance(header.get("model"), dict) else {}
        experts = model.get("num_experts")
        expert = field_int(record, "expert", place, maximum=experts - 1 if is_int(experts) and experts > 0 else None)
        place = f"{place} (layer {layer}, expert {expert})"
        status = field_choice(record, "status", place, STATUSES)
        if status == "ok":
            field_str(record, "explanation", place)
        else:
            need("explanation" in record and record["explanation"] is None, place,
                 "'explanation' must be null when status is \"failed\"")
            field_str(record, "error", place, optional=True)
            field_str(record, "raw", place, optional=True, nullable=True)
        check_prompt(field_map(record, "prompt", place, optional=True), place)
        check_explainer(field_map(record, "explainer", place, optional=True), place)
        examples = field_list(record, "examples", place, optional=True)
        need(examples is None or all(isinstance(e, str) for e in examples), place,
             "'examples' must be a list of context ids (strings)")
        usage = field_map(record, "usage", place, optional=True)
        for name in USAGE_COUNTS if usage is not None else ():
            field_int(usage, name, f"{place} usage", optional=True)
        check_evidence(field_map(record, "evidence", place, optional=True), place)
        field_int(record, "attempts", place, optional=True)
        seconds = field_number(record, "seconds", place, optional=True)
        need(seconds is None or seconds >= 0, place, "'seconds' must be >= 0")
        field_map(record, "details", place, optional=True)

    def check_end(self, end: dict, header: dict) -> None:
        accounting = field_map(end, "accounting", "labels end record", optional=True)
        for name in ACCOUNTING if accounting is not None else ():
            field_int(accounting, name, "labels end record accounting", optional=True)
        if accounting is not None:
            field_number(accounting, "seconds", "labels end record accounting", optional=True)


__all__ = ["LabelsSchema"]
