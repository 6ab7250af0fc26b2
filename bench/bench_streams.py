"""Benchmark: write then read a routing-trace-shaped stream.

Per token: 16 MoE layers x 8 selected experts, each a uint16 expert id, a
float16 gate and a float16 contribution norm = 768 bytes of raw payload per
token. Records are sequences of 256 tokens carrying three (L, T, K) arrays, as
moe-trace writes them (formats/trace.md). Compared in the same run:

* ``msgpack+zstd``   the default encoding (moetools.streams)
* ``msgpack``        the same records without compression
* ``jsonl``          the same records as JSON lines (arrays as nested lists)

Every variant is written and read in its own child process so that peak RSS
(``VmHWM``, ``bench/_harness.py``) is that variant's alone.
Throughput is MB/s of raw payload (10^6 bytes), counting only the stream
library's time (generating the random data is excluded). ``*_mb_s`` divides by
the CPU time of the process (``time.process_time``): MB/s on one core, which a
busy shared machine does not distort; ``*_mb_s_wall`` divides by elapsed time. JSON lines is slow, so
it runs on at most 100k tokens; per-token figures are comparable.

    .venv/bin/python bench/bench_streams.py           # 1M tokens
    .venv/bin/python bench/bench_streams.py --quick   # 100k tokens
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from _harness import measured_python, parser, write_result

LAYERS, TOP_K, NUM_EXPERTS, TOKENS_PER_RECORD = 16, 8, 64, 256
PAYLOAD_PER_TOKEN = LAYERS * TOP_K * (2 + 2 + 2)
VARIANTS = {"msgpack+zstd": ("msgpack", True), "msgpack": ("msgpack", False), "jsonl": ("jsonl", False)}
JSONL_MAX_TOKENS = 100_000


def make_record(rng, index: int, tokens: int) -> dict:
    """One sequence record with realistic value ranges (ids < 64, gates in (0, 1), norms ~ 0.1..10)."""
    import numpy as np

    shape = (LAYERS, tokens, TOP_K)
    experts = rng.integers(0, NUM_EXPERTS, size=shape, dtype=np.uint16)  # (L, T, K)
    gates = rng.dirichlet(np.ones(TOP_K), size=shape[:2]).astype(np.float16)  # (L, T, K)
    contribution = (gates.astype(np.float32) * rng.lognormal(1.0, 0.5, size=shape)).astype(np.float16)
    return {"type": "sequence", "doc_id": f"doc{index}", "window": 0, "offset": 0,
            "experts": experts, "gates": gates, "contribution": contribution}


def child_write(path: str, encoding: str, compress: bool, tokens: int, level: int | None) -> dict:
    import numpy as np

    from moetools.streams import StreamWriter

    rng = np.random.default_rng(0)
    cpu = wall = 0.0
    kwargs = {} if level is None else {"level": level}
    with open(path, "wb") as out:
        writer = None
        for index, first in enumerate(range(0, tokens, TOKENS_PER_RECORD)):
            record = make_record(rng, index, min(TOKENS_PER_RECORD, tokens - first))
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            if writer is None:
                writer = StreamWriter(out, "trace", tool={"name": "bench"},
                                      model={"name": "bench", "fingerprint": "x"},
                                      encoding=encoding, compress=compress, **kwargs)
            writer.write(record)
            cpu, wall = cpu + time.process_time() - cpu_start, wall + time.perf_counter() - wall_start
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        writer.close()
        out.flush()
        cpu, wall = cpu + time.process_time() - cpu_start, wall + time.perf_counter() - wall_start
    return {"cpu_seconds": cpu, "seconds": wall}


def child_read(path: str) -> dict:
    from moetools.streams import StreamReader

    cpu_start, wall_start = time.process_time(), time.perf_counter()
    tokens = 0
    with open(path, "rb") as source:
        for record in StreamReader(source, kinds="trace"):
            tokens += record["experts"].shape[1]
    return {"cpu_seconds": time.process_time() - cpu_start, "seconds": time.perf_counter() - wall_start,
            "tokens": tokens}


def run_child(*args: str) -> dict:
    result = measured_python([__file__, "--child", *args], check=False)
    if result["returncode"] != 0:
        raise SystemExit(f"child {args} failed:\n{result['stderr']}")
    return {**json.loads(result["stdout"].strip().splitlines()[-1]), "peak_rss_mb": result["peak_rss_mb"]}


def measure(variant: str, tokens: int, workdir: str, level: int | None = None) -> dict:
    encoding, compress = VARIANTS[variant]
    path = os.path.join(workdir, variant.replace("+", "_"))
    written = run_child("write", path, encoding, str(int(compress)), str(tokens), str(level or 0))
    size = os.path.getsize(path)
    read = run_child("read", path)
    os.unlink(path)
    if read["tokens"] != tokens:
        raise SystemExit(f"{variant}: read {read['tokens']} tokens, wrote {tokens}")
    payload_mb = tokens * PAYLOAD_PER_TOKEN / 1e6
    from moetools.streams import DEFAULT_LEVEL

    return {"variant": variant, "level": (level or DEFAULT_LEVEL) if compress else None, "tokens": tokens, "payload_mb": round(payload_mb, 1),
            "write_mb_s": round(payload_mb / written["cpu_seconds"], 1),
            "read_mb_s": round(payload_mb / read["cpu_seconds"], 1),
            "write_mb_s_wall": round(payload_mb / written["seconds"], 1),
            "read_mb_s_wall": round(payload_mb / read["seconds"], 1),
            "bytes_per_token": round(size / tokens, 1),
            "write_peak_rss_mb": written["peak_rss_mb"], "read_peak_rss_mb": read["peak_rss_mb"]}


def main() -> None:
    options = parser(__doc__, "streams")  # --quick: 100k tokens instead of 1M
    options.add_argument("--tokens", type=int, help="override the token count")
    options.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = options.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "write":
            path, encoding, compress, tokens, level = rest
            result = child_write(path, encoding, compress == "1", int(tokens), int(level) or None)
        else:
            result = child_read(rest[0])
        print(json.dumps(result))  # the parent adds this process's peak RSS
        return

    tokens = args.tokens or (100_000 if args.quick else 1_000_000)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_streams_") as workdir:
        for variant in VARIANTS:
            count = min(tokens, JSONL_MAX_TOKENS) if variant == "jsonl" else tokens
            rows.append(measure(variant, count, workdir))
            print(json.dumps(rows[-1]), flush=True)
        # why the default level is 1: level 3 on the same data
        level3 = measure("msgpack+zstd", tokens, workdir, level=3)
        print(json.dumps(level3), flush=True)
        # memory must not grow with stream length: the default encoding at a tenth of the length
        short = measure("msgpack+zstd", max(tokens // 10, TOKENS_PER_RECORD), workdir)
        print(json.dumps(short), flush=True)
    by = {row["variant"]: row for row in rows}
    default = by["msgpack+zstd"]
    ratios = {
        "write_speed_zstd_over_jsonl": round(default["write_mb_s"] / by["jsonl"]["write_mb_s"], 1),
        "read_speed_zstd_over_jsonl": round(default["read_mb_s"] / by["jsonl"]["read_mb_s"], 1),
        "write_speed_zstd_over_plain_msgpack": round(default["write_mb_s"] / by["msgpack"]["write_mb_s"], 2),
        "read_speed_zstd_over_plain_msgpack": round(default["read_mb_s"] / by["msgpack"]["read_mb_s"], 2),
        "size_jsonl_over_zstd": round(by["jsonl"]["bytes_per_token"] / default["bytes_per_token"], 1),
        "size_plain_msgpack_over_zstd": round(by["msgpack"]["bytes_per_token"] / default["bytes_per_token"], 2),
        "size_level1_over_level3": round(default["bytes_per_token"] / level3["bytes_per_token"], 3),
        "write_speed_level1_over_level3": round(default["write_mb_s"] / level3["write_mb_s"], 2),
        "read_rss_full_over_tenth_length": round(default["read_peak_rss_mb"] / short["read_peak_rss_mb"], 2),
        "write_rss_full_over_tenth_length": round(default["write_peak_rss_mb"] / short["write_peak_rss_mb"], 2),
    }
    targets = {"write_mb_s_over_200": default["write_mb_s"] > 200, "read_mb_s_over_200": default["read_mb_s"] > 200,
               "peak_rss_under_200_mb": max(default["write_peak_rss_mb"], default["read_peak_rss_mb"]) < 200}
    report = {"benchmark": "streams", "tokens": tokens, "load_average_at_end": os.getloadavg(),
              "speed_is": "MB/s of raw payload per CPU-second of one core", "payload_bytes_per_token": PAYLOAD_PER_TOKEN,
              "tokens_per_record": TOKENS_PER_RECORD, "results": rows, "zstd_level3": level3, "tenth_length": short,
              "ratios": ratios, "targets_met": targets}
    print(json.dumps({"ratios": ratios, "targets_met": targets}, indent=2))
    write_result(args, report)


if __name__ == "__main__":
    main()
