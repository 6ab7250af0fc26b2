"""What checking every field costs: reading a trace with and without the schema.

A synthetic trace of the OLMoE shape the other benches use (8 MoE layers, 32 experts,
top-4, windows of 512 tokens; ``moetools.testing.trace_factory``, |u1 ids, <f2 values as
moe-trace writes them) is read side by side, in one run and the same process:

- ``StreamReader(validate=False)``: framing, arrays decoded (what moe-cat copies with);
- ``StreamReader(validate=True)``: every header, record and end record checked by
  ``moetools.streams.schemas.trace`` (what moe-sample, moe-cat --check read with);
- moe-sample's pass over the same records (``sample_trace``) with the validating reader,
  to put the check beside the work it guards.

Best of ``--repeats`` for each; the JSON holds seconds, tokens/s and the ratios.

    .venv/bin/python bench/bench_validation.py            # 200k tokens
    .venv/bin/python bench/bench_validation.py --quick    # 20k tokens
"""

from __future__ import annotations

import io
import json
import time

from _harness import measure, parser, write_result

LAYERS, EXPERTS, TOP_K, WINDOW = tuple(range(8)), 32, 4, 512


def make_trace(tokens: int) -> bytes:
    from moetools.testing.trace_factory import make_records, write_trace

    documents = max(1, tokens // WINDOW)
    records = make_records(documents=documents, tokens=WINDOW, max_length=WINDOW, layers=LAYERS,
                           num_experts=EXPERTS, top_k=TOP_K, id_dtype="|u1", value_dtype="<f2", vocab=50000)
    return write_trace(records, layers=LAYERS, num_experts=EXPERTS, top_k=TOP_K, max_length=WINDOW)


def best(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv=None) -> None:
    options = parser(__doc__, "validation")
    options.add_argument("--repeats", type=int, default=3)
    args = options.parse_args(argv)

    from moetools.sample import SampleOptions, sample_trace
    from moetools.streams import StreamReader

    tokens = 20_000 if args.quick else 200_000
    data = make_trace(tokens)

    def read(validate: bool):
        for _ in StreamReader(io.BytesIO(data), kinds="trace", validate=validate):
            pass

    def sample():
        sample_trace(StreamReader(io.BytesIO(data), kinds="trace", validate=True), SampleOptions())

    with measure() as cost:
        plain = best(lambda: read(False), args.repeats)
        checked = best(lambda: read(True), args.repeats)
        sampled = best(sample, max(1, args.repeats - 1))
    real_tokens = (tokens // WINDOW) * WINDOW
    result = {
        "trace": {"tokens": real_tokens, "bytes": len(data), "layers": len(LAYERS), "num_experts": EXPERTS,
                  "top_k": TOP_K, "window": WINDOW, "encoding": "msgpack+zstd level 1, |u1 ids, <f2 values"},
        "read_seconds": round(plain, 4),
        "read_validated_seconds": round(checked, 4),
        "validation_seconds": round(checked - plain, 4),
        "read_validated_over_read": round(checked / plain, 3),
        "validation_tokens_per_second": round(real_tokens / max(checked - plain, 1e-9)),
        "moe_sample_seconds": round(sampled, 4),
        "validation_share_of_moe_sample": round((checked - plain) / sampled, 4),
        "whole_run": cost,
    }
    write_result(args, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
