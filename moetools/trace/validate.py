"""Checking ``sequence`` records against their trace header (formats/trace.md).

    for record in reader:
        check_sequence(record, reader.header)   # FormatError naming the field, else None

The rules live in the trace stream's schema (:mod:`moetools.streams.schemas.trace`),
which the reader (``validate=True``), ``moe-cat --check`` and every consumer use;
this name stays for stages of one's own written against it.
"""

from __future__ import annotations

from ..streams.schemas.trace import check_sequence

__all__ = ["check_sequence"]
