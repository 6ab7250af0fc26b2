"""SIGINT-then-resume, many times: every interrupted moe-trace resumes to the uninterrupted records.

Builds the tests' tiny OLMoE, traces a corpus once without interruption (the reference), then
until ``--runs`` runs were interrupted: starts ``moe-trace -o OUT`` (its ``main()`` in a forked child of this process,
so the imports are paid once), waits until ``OUT.partial`` exists (model loaded,
output open), sends SIGINT after a random delay drawn over the reference's tracing time, and runs
``moe-trace --resume -o OUT``. Counted: exit statuses of the interrupted runs (130; 0 when the run
finished before the signal), how many records each resume kept, and whether the resumed output's
records equal the reference bit for bit. Results: bench/results/interrupts.json.

    .venv/bin/python bench/bench_interrupts.py              # 50 interrupts (~1 min each on 2 busy cores)
    .venv/bin/python bench/bench_interrupts.py --quick      # 5 interrupts on 20 documents
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
from _harness import parser, write_result

WORDS = ["the", "a", "of", "to", "and", "in", "is", "it", "that", "for", "code", "law", "math", "cell", "expert"]
FLAGS = ["--max-length", "16", "--batch-size", "2"]


class Child:
    """moe-trace in a forked child of this process (torch and transformers imported once, before any
    thread pool starts, so each run costs the trace and not the imports; the signal handling and file
    paths are moe-trace's own: its main() runs in the child as from the command line)."""

    def __init__(self, args, quiet_stderr: bool = False):
        self.stderr_path = Path(tempfile.mktemp(prefix="moe-trace-stderr-"))
        self.pid = os.fork()
        if self.pid == 0:  # the child
            code = 1
            try:
                descriptor = os.open(self.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(descriptor, 2)
                from moetools.cli.trace import main

                main([str(a) for a in args], prog_name="moe-trace")
                code = 0
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else 1
            finally:
                os._exit(code)
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, number) -> None:
        if self.poll() is None:
            os.kill(self.pid, number)

    def stderr(self) -> str:
        text = self.stderr_path.read_text() if self.stderr_path.exists() else ""
        self.stderr_path.unlink(missing_ok=True)
        return text


def canonical_records(path: Path) -> list[str]:
    from moetools.streams import StreamReader

    with open(path, "rb") as handle:
        return [json.dumps({name: (value.dtype.str, value.shape, value.tobytes().hex())
                            if isinstance(value, np.ndarray) else value for name, value in record.items()},
                           sort_keys=True, default=str) for record in StreamReader(handle)]


def write_corpus(path: Path, documents: int) -> None:
    rng = np.random.default_rng(0)
    with open(path, "w") as handle:
        for number in range(documents):
            words = rng.choice(WORDS, size=int(rng.integers(10, 120)))
            handle.write(json.dumps({"id": f"doc{number}", "text": " ".join(words)}) + "\n")


def wait_for(path: Path, process, timeout: float = 300.0) -> float:
    start = time.monotonic()
    while not path.exists() and process.poll() is None and time.monotonic() - start < timeout:
        time.sleep(0.01)
    return time.monotonic()


def main() -> None:
    options = parser(__doc__, "interrupts")  # --quick: 5 interrupted runs, 20 documents
    options.add_argument("--runs", type=int, default=None, help="interrupted runs wanted (50; --quick: 5)")
    options.add_argument("--documents", type=int, default=None, help="corpus documents (40; --quick: 20)")
    options.add_argument("--seed", type=int, default=0)
    args = options.parse_args()
    args.runs = args.runs or (5 if args.quick else 50)
    args.documents = args.documents or (20 if args.quick else 40)
    from moetools.testing.tiny_models import save_tiny_olmoe

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import torch  # noqa: F401 - imported once, before forking
    import transformers  # noqa: F401

    import moetools.cli.trace
    import moetools.trace.run  # noqa: F401

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        save_tiny_olmoe(work / "model", WORDS)
        corpus = work / "corpus.jsonl"
        write_corpus(corpus, args.documents)
        reference_path = work / "reference.msgpack.zst"
        process = Child([work / "model", corpus, *FLAGS, "-q", "-o", reference_path])
        opened = wait_for(reference_path.with_name(reference_path.name + ".partial"), process)
        assert process.wait() == 0
        trace_seconds = time.monotonic() - opened
        reference = canonical_records(reference_path)
        runs = []
        scale = 0.9 * trace_seconds  # the longest delay drawn; shrunk when a run finishes before the signal
        run = -1
        while sum(1 for r in runs if r["interrupted_exit"] == 130) < args.runs and len(runs) < 3 * args.runs:
            run += 1
            output = work / f"run{run}.msgpack.zst"
            partial = output.with_name(output.name + ".partial")
            process = Child([work / "model", corpus, *FLAGS, "-q", "-o", output])
            wait_for(partial, process)
            delay = rng.uniform(0.0, scale)
            time.sleep(delay)
            process.send_signal(signal.SIGINT)
            status = process.wait()
            process.stderr()
            if status == 0:  # the machine ran faster than when the reference was timed
                scale *= 0.8
            partial_bytes = partial.stat().st_size if partial.exists() else None
            resumed = Child([work / "model", corpus, *FLAGS, "--resume", "-o", output])
            resume_exit, resume_stderr = resumed.wait(), resumed.stderr()
            kept = re.search(r"resuming after (\d+) complete records", resume_stderr)
            identical = resume_exit == 0 and canonical_records(output) == reference
            runs.append({"delay_s": round(delay, 3), "interrupted_exit": status, "partial_bytes": partial_bytes,
                         "resume_exit": resume_exit, "kept_records": int(kept.group(1)) if kept else 0,
                         "identical": identical, "resume_stderr": None if identical else resume_stderr.strip()[-300:]})
            print(json.dumps(runs[-1]), flush=True)
            write_results(args, runs, reference, trace_seconds)  # after every run: a stopped bench keeps its runs


def write_results(args, runs: list[dict], reference: list, trace_seconds: float) -> None:
    interrupted = [r for r in runs if r["interrupted_exit"] == 130]
    result = {
        "what": "moe-trace -o OUT interrupted by SIGINT after a random delay, then moe-trace --resume -o OUT; "
                "the resumed records compared with an uninterrupted run's, bit for bit",
        "model": "moetools.testing.tiny_models.save_tiny_olmoe (2 layers, 8 experts, top-2, d=32), --max-length 16 "
                 "--batch-size 2",
        "documents": args.documents, "records": len(reference), "reference_trace_seconds": round(trace_seconds, 2),
        "runs_wanted": args.runs, "runs": len(runs), "interrupted_130": len(interrupted),
        "finished_before_the_signal": sum(1 for r in runs if r["interrupted_exit"] == 0),
        "resumed_ok": sum(1 for r in runs if r["resume_exit"] == 0),
        "resumed_bit_identical": sum(1 for r in runs if r["identical"]),
        "interrupted_and_resumed_bit_identical": sum(1 for r in interrupted if r["identical"]),
        "kept_records": {"min": min(r["kept_records"] for r in runs), "max": max(r["kept_records"] for r in runs)},
        "per_run": runs,
    }
    write_result(args, result, quiet=True)


if __name__ == "__main__":
    main()
