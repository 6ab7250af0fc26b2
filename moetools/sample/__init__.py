"""moe-sample's logic: per (layer, expert) example sets from a trace in one streaming pass.

    from moetools.sample import SampleOptions, sample_trace
    header_extra, records, summary = sample_trace(reader, SampleOptions(top=20))

See :mod:`moetools.sample.sampler` (the pass), :mod:`moetools.sample.contexts`
(the context grid), :mod:`moetools.sample.reservoir` (heaps, A-Res, content
hashing) and formats/samples.md (the output).
"""

from __future__ import annotations

from ..errors import FormatError
from .assemble import summary_line
from .options import HARD_NEGATIVES, RANK_FIELDS, SET_NAMES, SampleOptions
from .sampler import Sampler

#: version of the samples record layout (formats/samples.md, "Version history")
SAMPLES_VERSION = 2


def _check_segments(reader, seen: int) -> int:
    """Later segments (concatenated shards) must agree with the first on layers, experts and top-k."""
    first = reader.headers[0]
    for index in range(seen, len(reader.headers)):
        later = reader.headers[index]
        for name in ("layers", "num_experts", "top_k"):
            if later.get(name) != first.get(name):
                raise FormatError(f"segment {index + 1} has {name} {later.get(name)!r}, segment 1 "
                                  f"{first.get(name)!r}: not shards of one trace")
    return len(reader.headers)


def sample_trace(reader, options: SampleOptions, on_record=None) -> tuple[dict, list[dict], dict]:
    """Read every record of ``reader`` (a trace StreamReader) and return (header extra, records, summary).

    Nothing is returned before the whole input is read: a truncated or invalid
    input raises before any output exists. ``on_record`` (optional) is called with
    every record read (progress display).
    """
    sampler = Sampler(reader.header, options, checked=getattr(reader, "validate", False))  # schema checks once
    segments = 1
    for number, record in enumerate(reader, start=1):
        if len(reader.headers) > segments:
            segments = _check_segments(reader, segments)
        sampler.feed(record, number)
        if on_record is not None:
            on_record(record)
    records, summary = sampler.results()
    header = reader.header
    extra = {
        "samples_version": SAMPLES_VERSION,
        "layers": [int(sampler.layers[row]) for row in sampler.rows],
        "num_experts": sampler.num_experts,
        "top_k": sampler.top_k,
        "activation": options.rank,
        "context": options.context,
        "seed": options.seed,
        "split": {"holdout_fraction": options.holdout_fraction, "region": options.split_region},
        "negatives": {"span": options.negative_span, "hard": options.hard_negatives},
        "wanted": options.wanted(),
        "domain": options.domain,
        # nothing here may depend on which shard came first (shard order must not change the output)
        "trace": {"corpus": header.get("corpus"), "max_length": header.get("max_length"),
                  "segments": len(reader.headers)},
    }
    return extra, records, summary


__all__ = ["HARD_NEGATIVES", "RANK_FIELDS", "SAMPLES_VERSION", "SET_NAMES", "SampleOptions", "Sampler",
           "sample_trace", "summary_line"]
