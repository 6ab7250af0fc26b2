"""The ``probe`` stream (formats/probe.md): k-sparse probes of expert / dense FFN neurons (paper 002)."""

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
    where,
)


def _concept_names(header: dict) -> set[str] | None:
    concepts = header.get("concepts")
    if not isinstance(concepts, list):
        return None
    return {concept.get("name") for concept in concepts if isinstance(concept, dict)}


@register_schema
class ProbeSchema(Schema):
    kind = "probe"
    record_types = ("probe", "best")

    def check_header(self, header: dict) -> None:
        place = "probe header"
        field_choice(header, "arch", place, ("moe", "dense"))
        concepts = field_list(header, "concepts", place)
        for concept in concepts:
            need(isinstance(concept, dict) and isinstance(concept.get("name"), str)
                 and isinstance(concept.get("description"), str), place,
                 "each of 'concepts' must be a map with string 'name' and 'description'")
        ks = field_list(header, "ks", place)
        need(bool(ks) and all(is_int(k) and k >= 1 for k in ks), place, "'ks' must be a non-empty list of integers >= 1")
        field_int(header, "min_count", place, minimum=1)
        split = field_map(header, "split", place)
        fraction = field_number(split, "test_fraction", place + " split")
        need(0 < fraction < 1, place, f"'split.test_fraction' must be in (0, 1), got {fraction!r}")
        field_choice(split, "by", place + " split", ("document",))
        field_int(header, "reservoir", place, minimum=1, optional=True)
        field_map(header, "regression", place, optional=True)

    def _common(self, record, header, place):
        concept = field_str(record, "concept", place)
        names = _concept_names(header)
        need(names is None or concept in names, place, f"'concept' {concept!r} is not among the header's concepts")
        field_int(record, "layer", place)
        dense = header.get("arch") == "dense"
        expert = field_int(record, "expert", place, nullable=True)
        need((expert is None) == dense, place, "'expert' is null exactly when the header's arch is 'dense'")
        k = field_int(record, "k", place, minimum=1)
        ks = header.get("ks")
        need(not isinstance(ks, list) or k in ks, place, f"'k' {k} is not among the header's ks")
        for name in ("train_f1", "test_f1"):
            value = field_number(record, name, place)
            need(0 <= value <= 1, place, f"'{name}' must be in [0, 1], got {value!r}")
        return k

    def check_probe(self, record, header, number=None):
        place = where("probe", number, "probe")
        k = self._common(record, header, place)
        neurons = field_list(record, "neurons", place)
        need(len(neurons) == k and all(is_int(n) and n >= 0 for n in neurons) and len(set(neurons)) == k, place,
             f"'neurons' must be {k} distinct neuron indices (k = {k})")
        for name in ("train_positives", "train_negatives", "test_positives", "test_negatives"):
            need(field_int(record, name, place) >= 1, place, f"'{name}' must be >= 1 (a probe needs both classes)")

    def check_best(self, record, header, number=None):
        self._common(record, header, where("probe", number, "best"))

    def check_end(self, end: dict, header: dict) -> None:
        summary = field_map(end, "summary", "probe end", optional=True)
        if summary is not None:
            skipped = field_map(summary, "skipped", "probe end summary")
            for reason, count in skipped.items():
                need(is_int(count) and count >= 0, "probe end summary",
                     f"'skipped.{reason}' must be an integer >= 0, got {count!r}")
