"""Peak RSS of moe-trace on one huge document (a single 50 MB line), side by side with the old way.

Each measurement runs in a fresh process. Peak RSS is ``VmHWM`` (``bench/_harness.py``): of a pass,
after the imports' peak is reset, also given as the growth above the RSS before the pass; of
moe-trace, read from its ``/proc/PID/status`` while it runs.

- ``windows``: moe-trace's tokenise-and-window pass (``iter_windows``: the document tokenised
  in pieces, windows formed as tokens arrive) over the whole document, at ``--mb`` MB and at a
  tenth of it: peak RSS should not grow with the document beyond the text itself;
- ``whole``: the old way, the whole document given to the tokenizer in one call (what
  moe-trace did before; 7.9 GB at 50 MB), at a tenth of ``--mb`` only (the full size would
  take gigabytes);
- ``moe-trace``: the command itself on the ``--mb`` MB document (tests' tiny OLMoE, word
  tokenizer), interrupted with SIGINT after ``--trace-seconds`` of tracing (the whole document is
  ~10M tokens: hours on a shared CPU), with its peak RSS and the records it wrote by then.

    .venv/bin/python bench/bench_long_document.py           # 50 MB (a few minutes)
    .venv/bin/python bench/bench_long_document.py --quick   # 5 MB, 10 s of moe-trace

Results: bench/results/long_document.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _harness import ROOT, parser, peak_rss_mb, reset_peak_rss, rss_mb, write_result

NOTE = ("windows_large's growth over windows_small is the document's own text, held as the corpus reader holds "
        "it (the line's bytes, the decoded line and the parsed JSON string: ~3 bytes a character); the tokenizer "
        "and the windows add a constant (one 64k-character piece, one sort buffer). whole_small is the old way, "
        "the whole text in one tokenizer call: ~137 bytes a character, ~6.9 GB at 50 MB by extrapolation (7.9 GB "
        "measured earlier)")
WORDS = ["the", "a", "of", "to", "and", "in", "is", "it", "that", "for", "code", "law", "math", "cell", "expert"]


def write_document(path: Path, megabytes: float, seed: int = 0) -> int:
    """One JSON line whose text is ``megabytes`` MB of words; returns the text's length in characters."""
    rng = np.random.default_rng(seed)
    target = int(megabytes * 1e6)
    words = np.array(WORDS)
    parts, length = [], 0
    while length < target:
        chunk = " ".join(words[rng.integers(0, len(words), 100_000)]) + " "
        parts.append(chunk)
        length += len(chunk)
    text = "".join(parts)[:target].rstrip() + " end"
    path.write_text(json.dumps({"id": "huge", "text": text}) + "\n")
    return len(text)


def child(mode: str, model: str, corpus: str) -> None:
    """Runs in a fresh process: one measurement, printed as a JSON line."""
    from transformers import AutoTokenizer

    from moetools.trace.corpus import read_documents
    from moetools.trace.runner import TraceOptions, TraceSummary, iter_windows

    tokenizer = AutoTokenizer.from_pretrained(model)
    baseline = rss_mb()
    reset_peak_rss()  # the peak of the pass, not of the imports
    start = time.perf_counter()
    with open(corpus, "rb") as source:
        if mode == "windows":
            windows = tokens = 0
            for windows, window in enumerate(iter_windows(read_documents(source, name="c"), tokenizer,
                                                          TraceOptions(max_length=512), TraceSummary()), start=1):
                tokens += len(window.token_ids)
        else:  # the old way: the whole text in one tokenizer call
            document = next(read_documents(source, name="c"))
            tokens = len(tokenizer(document.text, add_special_tokens=True)["input_ids"])
            windows = -(-tokens // 512)
    peak = peak_rss_mb()
    print(json.dumps({"peak_rss_mb": peak, "rss_before_mb": baseline, "peak_above_before_mb": round(peak - baseline, 1),
                      "seconds": round(time.perf_counter() - start, 2), "tokens": tokens, "windows": windows}))


def measure(mode: str, model: Path, corpus: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", mode, str(model), str(corpus)],
                            capture_output=True, text=True, check=False,
                            env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def trace_for(model: Path, corpus: Path, seconds: float, work: Path) -> dict:
    """moe-trace on the document until ``seconds`` after its output opened, then SIGINT."""
    from moetools.errors import FormatError
    from moetools.streams import StreamReader

    output = work / "huge.msgpack.zst"
    partial = output.with_name(output.name + ".partial")
    process = subprocess.Popen([sys.executable, "-c", "from moetools.cli.trace import main; main()", str(model),
                                str(corpus), "--max-length", "64", "-q", "-o", str(output)],
                               env=dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false"),
                               stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    while not partial.exists() and process.poll() is None:
        time.sleep(0.05)
    opened = time.monotonic()
    peak = 0.0
    while process.poll() is None and time.monotonic() - opened < seconds:
        peak = max(peak, peak_rss_mb(str(process.pid)))
        time.sleep(0.5)
    if process.poll() is None:
        peak = max(peak, peak_rss_mb(str(process.pid)))
        process.send_signal(signal.SIGINT)
    status = process.wait()
    records = 0
    with open(partial if partial.exists() else output, "rb") as handle, contextlib.suppress(FormatError):
        for _ in StreamReader(handle):  # a partial output ends truncated (FormatError)
            records += 1
    return {"peak_rss_mb": round(peak, 1), "exit": status, "seconds_to_output_open": round(opened - started, 1),
            "seconds_traced": round(time.monotonic() - opened, 1), "records_written": records,
            "tokens_written": records * 64}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
        return
    options = parser(__doc__, "long_document")  # --quick: 5 MB, 10 s of moe-trace
    options.add_argument("--mb", type=float, default=None, help="document size in MB (50; --quick: 5)")
    options.add_argument("--trace-seconds", type=float, default=None, help="moe-trace's time (60; --quick: 10)")
    args = options.parse_args()
    args.mb = args.mb or (5.0 if args.quick else 50.0)
    args.trace_seconds = args.trace_seconds or (10.0 if args.quick else 60.0)
    from moetools.testing.tiny_models import save_tiny_olmoe

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        save_tiny_olmoe(work / "model", WORDS)
        large, small = work / "large.jsonl", work / "small.jsonl"
        chars = write_document(large, args.mb)
        small_chars = write_document(small, args.mb / 10)
        rows = {
            "windows_large": measure("windows", work / "model", large),
            "windows_small": measure("windows", work / "model", small),
            "whole_small": measure("whole", work / "model", small),
        }
        rows["moe_trace_large"] = trace_for(work / "model", large, args.trace_seconds, work)
    result = {
        "what": "peak RSS of one huge document (a single JSON line) in moe-trace: tokenised in pieces and windowed "
                "as tokens arrive (now) vs. the whole text in one tokenizer call (before)",
        "document_mb": args.mb, "document_chars": chars, "small_document_chars": small_chars,
        "tokenizer": "word-level (moetools.testing.tiny_models), max_length 512 for the windows pass, 64 for moe-trace",
        **rows,
        "note": NOTE,
        "ratios": {
            "windows_peak_above_before_large_over_small": round(rows["windows_large"]["peak_above_before_mb"]
                                                                / rows["windows_small"]["peak_above_before_mb"], 2),
            "whole_over_pieces_peak_above_before_small": round(rows["whole_small"]["peak_above_before_mb"]
                                                               / rows["windows_small"]["peak_above_before_mb"], 2),
        },
    }
    write_result(args, result, quiet=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
