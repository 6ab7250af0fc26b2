"""Synthetic traces with known activations, kept importable under this name for the tests (they live in
moetools.testing.trace_factory, which bench/ imports too)."""

from moetools.testing.trace_factory import MODEL, header_extra, make_records, write_trace

__all__ = ["MODEL", "header_extra", "make_records", "write_trace"]
