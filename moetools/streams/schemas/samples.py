"""The ``samples`` stream (formats/samples.md) in code: header, ``expert`` records, end record.

Required in an ``expert`` record: ``layer``, ``expert`` and the ``explain`` sets, and in
every context ``id``, ``doc_id``, ``offset``, ``mark``, ``pieces``, ``activation`` and
``score`` (what an explainer and a scorer read). The other fields of formats/samples.md
(``status``, ``stats``, ``holdout``, context ``window``/``region``/``tokens``, ...) are
checked when present; unknown fields are ignored.
"""

from __future__ import annotations

from ..schema import (
    Schema,
    field_array,
    field_bool,
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

STATUSES = ("ok", "short", "below-min-count")
ACTIVATIONS = ("contribution", "gate")
HARD_NEGATIVES = ("none", "domain", "token")
#: the sets of a record: (map, set names); ``explain`` is required, ``holdout`` optional
EXPLAIN_SETS = ("top", "weighted", "negative")
HOLDOUT_SETS = ("positive", "negative")
SET_SIZES = ("top", "weighted", "negative", "holdout_positive", "holdout_negative")


def _check_sizes(record: dict, name: str, place: str) -> None:
    sizes = field_map(record, name, place, optional=True)
    for key in SET_SIZES:  # other keys are not the spec's: ignored
        if sizes is not None:
            field_int(sizes, key, f"{place} {name}", optional=True)


@register_schema
class SamplesSchema(Schema):
    kind = "samples"
    record_types = ("expert",)

    def check_header(self, header: dict) -> None:
        place = "samples header"
        field_int(header, "samples_version", place, minimum=1, optional=True)
        layers = field_list(header, "layers", place, optional=True)
        need(layers is None or all(is_int(layer) and layer >= 0 for layer in layers), place,
             "'layers' must be a list of integers >= 0")
        experts = field_int(header, "num_experts", place, minimum=1, optional=True)
        field_int(header, "top_k", place, minimum=1, maximum=experts, optional=True)
        field_choice(header, "activation", place, ACTIVATIONS, optional=True)
        field_int(header, "context", place, minimum=1, optional=True)
        field_int(header, "seed", place, minimum=None, optional=True)
        split = field_map(header, "split", place, optional=True)
        if split is not None:
            fraction = field_number(split, "holdout_fraction", f"{place} split", optional=True)
            need(fraction is None or 0 <= fraction <= 1, f"{place} split", "'holdout_fraction' must be in [0, 1]")
            field_int(split, "region", f"{place} split", optional=True)
        negatives = field_map(header, "negatives", place, optional=True)
        if negatives is not None:
            field_int(negatives, "span", f"{place} negatives", minimum=1, optional=True)
            field_choice(negatives, "hard", f"{place} negatives", HARD_NEGATIVES, optional=True)
        _check_sizes(header, "wanted", place)
        field_str(header, "domain", place, optional=True, nullable=True)
        field_map(header, "trace", place, optional=True)

    def check_expert(self, record: dict, header: dict, number: int | None = None) -> None:
        place = f"expert record{'' if number is None else f' {number}'}"
        layer = field_int(record, "layer", place)
        experts = header.get("num_experts")
        expert = field_int(record, "expert", place, maximum=experts - 1 if is_int(experts) else None)
        place = f"{place} (layer {layer}, expert {expert})"
        layers = header.get("layers")
        need(not isinstance(layers, list) or layer in layers, place, f"layer {layer} is not in the header's layers")
        field_choice(record, "status", place, STATUSES, optional=True)
        field_bool(record, "short", place, optional=True)
        stats = field_map(record, "stats", place, optional=True)
        if stats is not None:
            for name in ("firing_tokens", "tokens_seen", "sequences"):
                field_int(stats, name, f"{place} stats", optional=True)
            field_number(stats, "max_activation", f"{place} stats", optional=True)
            for name in ("positive_contexts", "negative_contexts"):
                field_map(stats, name, f"{place} stats", optional=True)
        _check_sizes(record, "wanted", place)
        _check_sizes(record, "found", place)
        self._check_sets(record, "explain", EXPLAIN_SETS, place, optional=False)
        self._check_sets(record, "holdout", HOLDOUT_SETS, place, optional=True)
        lens = field_list(record, "logit_lens", place, optional=True)
        for entry in lens or ():
            need(isinstance(entry, dict), place, "'logit_lens' must be a list of maps")
            field_str(entry, "piece", f"{place} logit_lens")
            field_int(entry, "count", f"{place} logit_lens", minimum=1)
            field_int(entry, "id", f"{place} logit_lens", optional=True)

    def _check_sets(self, record, name, sets, place, *, optional: bool) -> None:
        groups = field_map(record, name, place, optional=optional)
        for set_name in sets if groups is not None else ():
            contexts = field_list(groups, set_name, f"{place} {name}", optional=True)
            for index, context in enumerate(contexts or ()):
                self.check_context(context, f"{place} {name}.{set_name}[{index}]")

    def check_context(self, context, place: str) -> None:
        """One context of a set (formats/samples.md, *A context*)."""
        need(isinstance(context, dict), place, "a context must be a map")
        field_str(context, "id", place)
        field_str(context, "doc_id", place)
        field_int(context, "offset", place)
        field_int(context, "window", place, optional=True)
        field_int(context, "region", place, optional=True)
        pieces = field_list(context, "pieces", place)
        need(all(isinstance(piece, str) for piece in pieces), place, "'pieces' must be a list of strings")
        length = len(pieces)
        field_int(context, "mark", place, maximum=max(length - 1, 0))
        field_array(context, "activation", place, ("<f4",), (length,))
        field_array(context, "tokens", place, ("<i4",), (length,), optional=True)
        field_number(context, "score", place)  # finite, as every number (formats/README.md)
        field_map(context, "meta", place, optional=True)

    def check_end(self, end: dict, header: dict) -> None:
        field_map(end, "summary", "samples end record", optional=True)


__all__ = ["SamplesSchema"]
