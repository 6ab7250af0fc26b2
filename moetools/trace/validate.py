"""Checking ``sequence`` records against their trace header (formats/trace.md).

    for record in reader:
        check_sequence(record, reader.header)   # FormatError naming the field, else None

For a stage of one's own that writes traces, and for tools that want a clear
message instead of an IndexError deep inside their own code.
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError


def _array(record: dict, name: str, where: str, kinds: str, shape: tuple) -> np.ndarray:
    value = record.get(name)
    if not isinstance(value, np.ndarray):
        raise FormatError(f"{where}: '{name}' is missing or not an array")
    if value.dtype.kind not in kinds:
        raise FormatError(f"{where}: '{name}' has dtype {value.dtype.str}, expected kind {' or '.join(kinds)}")
    if value.shape != shape:
        raise FormatError(f"{where}: '{name}' has shape {list(value.shape)}, expected {list(shape)}")
    return value


def check_sequence(record: dict, header: dict, number: int | None = None) -> None:
    """Raise :class:`FormatError` unless ``record`` is a valid ``sequence`` record of this header."""
    doc_id = record.get("doc_id")
    where = f"sequence record{'' if number is None else f' {number}'} (doc {doc_id!r})"
    if not isinstance(doc_id, str):
        raise FormatError(f"{where}: 'doc_id' must be a string")
    for name in ("window", "offset"):
        value = record.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise FormatError(f"{where}: '{name}' must be an integer >= 0")
    if not isinstance(record.get("meta"), dict):
        raise FormatError(f"{where}: 'meta' must be a map")
    tokens = record.get("tokens")
    if not isinstance(tokens, np.ndarray) or tokens.ndim != 1 or tokens.dtype.kind not in "iu" or not len(tokens):
        raise FormatError(f"{where}: 'tokens' must be a non-empty 1-d integer array")
    length = len(tokens)
    pieces = record.get("pieces")
    if not isinstance(pieces, list) or len(pieces) != length or not all(isinstance(p, str) for p in pieces):
        raise FormatError(f"{where}: 'pieces' must be a list of {length} strings")
    layers, experts, top_k = len(header["layers"]), int(header["num_experts"]), int(header["top_k"])
    shape = (layers, length, top_k)
    ids = _array(record, "experts", where, "u", shape)
    padding = np.iinfo(ids.dtype).max
    if ((ids >= experts) & (ids != padding)).any():
        raise FormatError(f"{where}: 'experts' holds ids >= num_experts ({experts})")
    gates = _array(record, "gates", where, "f", shape)
    _array(record, "contribution", where, "f", shape)
    if (gates[ids == padding] != 0).any():
        raise FormatError(f"{where}: a padding slot (id {padding}) has a non-zero gate")
    _array(record, "prob_sum", where, "f", (layers, experts))
    top = int(header.get("logit_lens") or 0)
    if top:
        lens = _array(record, "logit_lens", where, "iu", (*shape, top))
        names = record.get("logit_lens_pieces")
        if not isinstance(names, dict) or not {str(int(t)) for t in np.unique(lens)} <= set(names):
            raise FormatError(f"{where}: 'logit_lens_pieces' must name every id in 'logit_lens'")
