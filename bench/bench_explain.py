"""Benchmark moe-explain: labels per second against a loopback OpenAI-compatible stub with 200 ms latency.

Side by side in one run: ``--concurrency 1`` vs ``--concurrency 32`` on 256 experts
(target: >= 20x labels/s), then a rerun of the same command with a fresh output
file, answered from the response cache (target: under 2 s and zero requests), both
in-process and as a separate process (interpreter start-up included). Then a server
with one slot (one request at a time, 0.3 s each, like llama.cpp's server) asked
with ``--concurrency 8 --timeout 1``: requests sent and seconds with the client's
adaptive in-flight limit, and with that limit held fixed (the earlier client).

    .venv/bin/python bench/bench_explain.py           # full: 256 experts at both concurrencies
    .venv/bin/python bench/bench_explain.py --quick   # concurrency 1 on 32 experts only

Writes bench/results/explain.json.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import ROOT, measure, parser, write_result
from click.testing import CliRunner

from moetools.cli.explain import command
from moetools.testing.llm_stub import LLMStub, write_samples

LATENCY = 0.2
SLOT_LATENCY = 0.3


def run(stub, samples, output, cache, concurrency):
    stub.reset()
    arguments = [str(samples), "--api-base", stub.url, "--model", "stub", "--cache-dir", str(cache),
                 "--concurrency", str(concurrency), "-o", str(output)]
    started = time.perf_counter()
    result = CliRunner().invoke(command, arguments, env={"OPENAI_API_KEY": "bench"}, catch_exceptions=False)
    seconds = time.perf_counter() - started
    if result.exit_code != 0:
        raise SystemExit(f"moe-explain failed: {result.stderr}")
    labels = sum(1 for line in Path(output).read_text().splitlines() if '"type":"label"' in line)
    return {"concurrency": concurrency, "experts": labels, "seconds": round(seconds, 3),
            "labels_per_second": round(labels / seconds, 2), "requests": len(stub.requests),
            "max_in_flight": stub.max_in_flight, "accounting": result.stderr.strip().splitlines()[-1]}


def one_slot_server(scratch: Path, adaptive: bool) -> dict:
    """16 experts against a server that answers one request at a time."""
    import moetools.llm.openai as openai_client

    release = openai_client.AdaptiveLimit.release

    async def fixed_release(self, timed_out=False):  # the limit never drops: every timeout is retried at full width
        await release(self, False)

    if not adaptive:
        openai_client.AdaptiveLimit.release = fixed_release
    try:
        name = "adaptive" if adaptive else "fixed"
        samples = scratch / "slot.msgpack.zst"
        write_samples(samples, experts=16)
        with LLMStub(latency=SLOT_LATENCY, slots=1) as slow:
            arguments = [str(samples), "--api-base", slow.url, "--model", "stub", "--cache-dir",
                         str(scratch / f"cache-{name}"), "--concurrency", "8", "--timeout", "1", "-o",
                         str(scratch / f"slot-{name}.jsonl")]
            started = time.perf_counter()
            result = CliRunner().invoke(command, arguments, env={"OPENAI_API_KEY": "bench"}, catch_exceptions=False)
            seconds = time.perf_counter() - started
        return {"exit_code": result.exit_code, "seconds": round(seconds, 3), "requests": len(slow.requests),
                "accounting": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""}
    finally:
        openai_client.AdaptiveLimit.release = release


def main() -> None:
    options = parser(__doc__, "explain")  # --quick: concurrency 1 on 32 experts (ratios per label)
    options.add_argument("--experts", type=int, default=256)
    arguments = options.parse_args()
    with measure() as cost, tempfile.TemporaryDirectory() as scratch, LLMStub(latency=LATENCY) as stub:
        scratch = Path(scratch)
        samples = scratch / "samples.msgpack.zst"
        write_samples(samples, experts=arguments.experts)
        serial_experts = 32 if arguments.quick else arguments.experts
        serial_samples = scratch / "serial.msgpack.zst"
        write_samples(serial_samples, experts=serial_experts, layers=1)

        serial = run(stub, serial_samples, scratch / "c1.jsonl", scratch / "cache-c1", 1)
        parallel = run(stub, samples, scratch / "c32.jsonl", scratch / "cache", 32)
        cached = run(stub, samples, scratch / "again.jsonl", scratch / "cache", 32)

        stub.reset()
        env = {**os.environ, "OPENAI_API_KEY": "bench", "MOETOOLS_PYTHON": sys.executable}
        started = time.perf_counter()
        subprocess.run([str(ROOT / "bin" / "moe-explain"), str(samples), "--api-base", stub.url, "--model", "stub",
                        "--cache-dir", str(scratch / "cache"), "-q", "-o", str(scratch / "process.jsonl")],
                       env=env, check=True)
        process_seconds = time.perf_counter() - started
        process_requests = len(stub.requests)

        slot_adaptive = one_slot_server(scratch, adaptive=True)
        slot_fixed = one_slot_server(scratch, adaptive=False)

    speedup = parallel["labels_per_second"] / serial["labels_per_second"]
    results = {
        "benchmark": "moe-explain labels/s against a loopback OpenAI-compatible stub",
        "latency_s": LATENCY, "load_average_1m_at_end": round(os.getloadavg()[0], 2), "whole_run": cost,
        "concurrency_1": serial, "concurrency_32": parallel, "cached_rerun": cached,
        "cached_rerun_process": {"seconds": round(process_seconds, 3), "requests": process_requests},
        "speedup_c32_over_c1": round(speedup, 2),
        "one_slot_server": {"latency_s": SLOT_LATENCY, "experts": 16, "concurrency": 8, "timeout_s": 1.0,
                            "adaptive_limit": slot_adaptive, "fixed_limit": slot_fixed},
        "targets": {"speedup >= 20": speedup >= 20, "cached rerun < 2 s": cached["seconds"] < 2.0,
                    "cached rerun zero requests": cached["requests"] == 0 and process_requests == 0},
    }
    print(f"concurrency 1 : {serial['labels_per_second']:8.2f} labels/s ({serial['experts']} experts, "
          f"{serial['seconds']} s)")
    print(f"concurrency 32: {parallel['labels_per_second']:8.2f} labels/s ({parallel['experts']} experts, "
          f"{parallel['seconds']} s, max in flight {parallel['max_in_flight']})")
    print(f"speed-up      : {speedup:8.2f}x (target >= 20x)")
    print(f"cached rerun  : {cached['seconds']} s in-process, {process_seconds:.2f} s as a process, "
          f"{cached['requests'] + process_requests} requests (target < 2 s, 0 requests)")
    print(f"one-slot server: adaptive {slot_adaptive['requests']} requests in {slot_adaptive['seconds']} s, "
          f"fixed {slot_fixed['requests']} requests in {slot_fixed['seconds']} s (16 experts)")
    write_result(arguments, results)


if __name__ == "__main__":
    main()
