"""The ``trace`` stream (formats/trace.md) in code: header, ``sequence`` records, end record.

    schema_for("trace").check_record(record, header, number)   # FormatError naming the field

Required in the header: ``layers``, ``num_experts``, ``top_k`` (what every consumer
indexes with); the other header fields of formats/trace.md are checked when present,
and ``routing`` values must be ones the spec lists. A ``sequence`` record must hold
every field of the spec (``logit_lens`` and ``logit_lens_pieces`` when the header's
``logit_lens`` is above 0), with the dtypes and shapes the spec gives.
"""

from __future__ import annotations

import numpy as np

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

#: values of ``routing.scoring`` and ``routing.order`` formats/trace.md lists (MONET: product_key,
#: threshold_then_softmax); any other is refused
ROUTING_SCORING = ("softmax", "sigmoid", "product_key")
ROUTING_ORDER = ("softmax_then_topk", "topk_then_softmax", "threshold_then_softmax")
ROUTING_FLAGS = ("renormalize", "score_bias", "group_limited", "router_bias")
PRECISIONS = (8, 11, 24)
SHARD_BY = ("index", "hash")
EXPERT_ID_DTYPES = ("|u1", "<u2", "<u4")  # unsigned: the all-ones id marks a padding slot
VALUE_DTYPES = ("<f2", "<f4")
TOKEN_DTYPES = ("<i4",)


def header_shape(header: dict) -> tuple[int, int, int]:
    """(L, E, K) of a checked header: MoE layers, experts per layer, slots per token."""
    return len(header["layers"]), int(header["num_experts"]), int(header["top_k"])


@register_schema
class TraceSchema(Schema):
    kind = "trace"
    record_types = ("sequence",)

    def check_header(self, header: dict) -> None:
        place = "trace header"
        layers = header.get("layers")
        need(isinstance(layers, list) and bool(layers) and all(is_int(layer) and layer >= 0 for layer in layers),
             place, "no 'layers' list (a non-empty list of integers >= 0, formats/trace.md)")
        experts = field_int(header, "num_experts", place, minimum=1)
        top_k = field_int(header, "top_k", place, minimum=1, maximum=experts)
        override = field_int(header, "top_k_override", place, minimum=1, maximum=experts, optional=True,
                             nullable=True)
        need(override is None or override == top_k, place,
             f"'top_k_override' {override} must equal 'top_k' {top_k}: the records have one slot per selected expert")
        routing = field_map(header, "routing", place, optional=True)
        if routing is not None:
            where = "trace header routing"
            field_choice(routing, "scoring", where, ROUTING_SCORING, optional=True)
            field_choice(routing, "order", where, ROUTING_ORDER, optional=True)
            for flag in ROUTING_FLAGS:
                field_bool(routing, flag, where, optional=True)
            field_number(routing, "scaling", where, optional=True)
        field_str(header, "experts_implementation", place, optional=True, nullable=True)
        field_int(header, "max_length", place, minimum=1, optional=True)
        for name in ("text_field", "id_field", "corpus"):
            field_str(header, name, place, optional=True)
        shard = field_str(header, "shard", place, optional=True, nullable=True)
        if shard is not None:
            parts = shard.split("/")
            need(len(parts) == 2 and all(p.isdigit() for p in parts) and int(parts[0]) < int(parts[1]),
                 place, f"'shard' must be \"i/n\" with 0 <= i < n, got {shard!r}")
        field_choice(header, "shard_by", place, SHARD_BY, optional=True)
        field_int(header, "logit_lens", place, minimum=0, optional=True)
        field_choice(header, "precision", place, PRECISIONS, optional=True)
        field_bool(header, "reduced_precision_padding", place, optional=True)
        quantized = field_map(header, "quantized_weights", place, optional=True)
        if quantized is not None:
            where = "trace header quantized_weights"
            field_str(quantized, "quant_method", where)
            field_bool(quantized, "dequantized", where)
            field_str(quantized, "dtype", where, optional=True)
        order = field_map(header, "order", place, optional=True)
        if order is not None:
            field_int(order, "sort_buffer", "trace header order", minimum=1, optional=True)
            field_int(order, "batch_tokens", "trace header order", minimum=1, optional=True, nullable=True)
            field_int(order, "batch_size", "trace header order", minimum=1, optional=True, nullable=True)

    def check_sequence(self, record: dict, header: dict, number: int | None = None) -> None:
        """Raise :class:`FormatError` unless ``record`` is a valid ``sequence`` record of this header."""
        doc_id = record.get("doc_id")
        place = f"sequence record{'' if number is None else f' {number}'} (doc {doc_id!r})"
        need(isinstance(doc_id, str), place, "'doc_id' must be a string")
        for name in ("window", "offset"):
            value = record.get(name)
            need(is_int(value) and value >= 0, place, f"'{name}' must be an integer >= 0")
        need(isinstance(record.get("meta"), dict), place, "'meta' must be a map")
        tokens = record.get("tokens")
        need(isinstance(tokens, np.ndarray) and tokens.ndim == 1 and tokens.dtype.kind in "iu" and len(tokens) > 0,
             place, "'tokens' must be a non-empty 1-d integer array")
        field_array(record, "tokens", place, TOKEN_DTYPES)
        length = len(tokens)
        max_length = header.get("max_length")
        need(not is_int(max_length) or length <= max_length, place,
             f"{length} tokens, more than the header's max_length {max_length}")
        pieces = record.get("pieces")
        need(isinstance(pieces, list) and len(pieces) == length and all(isinstance(p, str) for p in pieces),
             place, f"'pieces' must be a list of {length} strings")
        layers, experts, top_k = header_shape(header)
        shape = (layers, length, top_k)
        ids = record.get("experts")
        if isinstance(ids, np.ndarray) and ids.dtype.kind == "i":
            need(False, place, f"'experts' has dtype {ids.dtype.str}: expert ids are unsigned "
                               f"({' or '.join(EXPERT_ID_DTYPES)})")
        ids = field_array(record, "experts", place, EXPERT_ID_DTYPES, shape)
        # all ones: a padding slot (MONET, fewer than K non-zero gates) -- only where it cannot be an
        # expert id; a stream written before 2026-12-01 may hold 256 experts in |u1, 255 a real expert
        padding = np.iinfo(ids.dtype).max
        padding = padding if padding >= experts else None
        out_of_range = (ids >= experts) & (ids != padding)
        if out_of_range.any():
            where_bad = np.argwhere(out_of_range)[0]
            need(False, place, f"'experts' holds id {int(ids[tuple(where_bad)])} (layer "
                               f"{header['layers'][int(where_bad[0])]}, token {int(where_bad[1])}): "
                               f"ids >= num_experts ({experts}) are out of range")
        gates = field_array(record, "gates", place, VALUE_DTYPES, shape)
        field_array(record, "contribution", place, VALUE_DTYPES, shape)
        need(padding is None or not (gates[ids == padding] != 0).any(), place,
             f"a padding slot (id {padding}) has a non-zero gate")
        field_array(record, "prob_sum", place, ("<f4",), (layers, experts))
        top = header.get("logit_lens") or 0
        if top:
            lens = field_array(record, "logit_lens", place, TOKEN_DTYPES, (*shape, top))
            names = record.get("logit_lens_pieces")
            need(isinstance(names, dict) and {str(int(t)) for t in np.unique(lens)} <= set(names)
                 and all(isinstance(piece, str) for piece in names.values()),
                 place, "'logit_lens_pieces' must name every id in 'logit_lens'")

    def check_end(self, end: dict, header: dict) -> None:
        place = "trace end record"
        for name in ("documents", "windows", "tokens", "skipped_lines"):
            field_int(end, name, place, optional=True)
        skipped = field_list(end, "skipped", place, optional=True)
        for entry in skipped or ():
            need(isinstance(entry, dict) and is_int(entry.get("line")) and isinstance(entry.get("reason"), str),
                 place, "'skipped' must be a list of {\"line\": int, \"reason\": str}")


def check_sequence(record: dict, header: dict, number: int | None = None) -> None:
    """Raise :class:`FormatError` unless ``record`` is a valid ``sequence`` record of this trace ``header``."""
    TraceSchema().check_sequence(record, header, number)


__all__ = ["ROUTING_ORDER", "ROUTING_SCORING", "TraceSchema", "check_sequence", "header_shape"]
