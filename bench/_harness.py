"""What every benchmark shares: the command line, one way to measure, the machine, the results file.

    from _harness import measure, measured_python, parser, write_result

    args = parser(__doc__, "trace").parse_args()        # --quick, -o/--output bench/results/trace.json
    with measure() as cost:                             # this process: wall, CPU, peak RSS
        ...
    child = measured_python(["-m", "moetools.cli.trace", MODEL, CORPUS, "-o", OUT])  # a fresh process
    write_result(args, {"trace": cost, "cli": child})   # + quick, machine facts, atomically

One way to measure, in this process or a child:

- ``wall_s``: ``time.perf_counter`` around the work;
- ``cpu_s``: user + system seconds of the process (``getrusage``, itself and the children it waited for);
- ``peak_rss_mb``: the high-water mark of the process's own resident set, ``VmHWM`` in
  ``/proc/<pid>/status``, read by the process itself (:func:`peak_rss_mb`). Not ``ru_maxrss``:
  Linux carries the parent's high-water mark into a child across fork and exec, so a child of a
  big benchmark process would report the parent's peak. ``measure(reset_peak=True)`` first resets
  the mark (``/proc/self/clear_refs``), so the peak is the measured work's and not the imports'.

A child (:func:`measured_python`) runs under this file's ``--measure-child`` wrapper, which runs the
given ``python`` arguments (``-c CODE``, ``-m MODULE`` or ``SCRIPT``, then their arguments) and writes
its own CPU seconds and ``VmHWM`` when it ends; its stdout and stderr come back.

The results file gets ``quick`` and ``machine``: CPU model, cores (online and usable), memory,
Python, torch, transformers and numpy versions (from the installed metadata, so nothing is imported),
``OMP_NUM_THREADS``, the git commit, the time, and the 1/5/15-minute load average when the benchmark
started (a loaded machine is the usual reason two runs disagree).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import runpy
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOAD_AT_START = os.getloadavg()
STARTED = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
if str(ROOT) not in sys.path:  # the checkout's moetools, not an installed one
    sys.path.insert(0, str(ROOT))


# -- the command line -------------------------------------------------------------------------------------

def parser(doc: str | None, name: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark has: ``--quick`` and ``-o/--output``.

    ``--quick`` is a run of the same measurements at sizes that take a minute or two (what
    bench_compare_versions.py runs in each tree); ``--output`` defaults to bench/results/<name>.json.
    """
    description = (doc or name).strip().splitlines()[0]
    made = argparse.ArgumentParser(description=description, epilog=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    made.add_argument("--quick", action="store_true", help="small sizes: the same measurements in a minute or two")
    made.add_argument("-o", "--output", "--out", dest="output", type=Path, default=RESULTS / f"{name}.json",
                      help="results JSON (default: bench/results/%(default)s)".replace("%(default)s", f"{name}.json"))
    return made


# -- measuring ---------------------------------------------------------------------------------------------

def _status_kb(field: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def peak_rss_mb(pid: str = "self") -> float:
    """The process's peak resident set so far (``VmHWM``), in MiB."""
    return round(_status_kb("VmHWM", pid) / 1024, 1)


def rss_mb(pid: str = "self") -> float:
    """The process's resident set now (``VmRSS``), in MiB."""
    return round(_status_kb("VmRSS", pid) / 1024, 1)


def reset_peak_rss() -> None:
    """From here on ``VmHWM`` is the peak of what follows (the kernel sets it to the current RSS)."""
    Path("/proc/self/clear_refs").write_text("5")


def cpu_seconds() -> float:
    """User + system seconds of this process and of the children it has waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextlib.contextmanager
def measure(reset_peak: bool = False):
    """Measure the block in this process: yields a dict that holds wall_s, cpu_s and peak_rss_mb after it."""
    cost: dict = {}
    if reset_peak:
        reset_peak_rss()
    cpu, wall = cpu_seconds(), time.perf_counter()
    try:
        yield cost
    finally:
        cost.update(wall_s=round(time.perf_counter() - wall, 4), cpu_s=round(cpu_seconds() - cpu, 4),
                    peak_rss_mb=peak_rss_mb())


def measured_python(arguments: list[str], *, env: dict | None = None, cwd: Path | None = None,
                    check: bool = True, timeout: float | None = None) -> dict:
    """Run ``python ARGUMENTS`` in a fresh process: wall_s, cpu_s, peak_rss_mb of that process, its output.

    ``env`` is added to this process's environment (``PYTHONPATH`` is the checkout unless given).
    Returns also ``returncode``, ``stdout``, ``stderr``; with ``check`` a failure raises, naming the tail
    of stderr.
    """
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        report = Path(handle.name)
    try:
        command = [sys.executable, str(Path(__file__).resolve()), "--measure-child", str(report), *arguments]
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=full_env, cwd=cwd or ROOT,
                              timeout=timeout, check=False)
        wall = time.perf_counter() - started
        if check and done.returncode != 0:
            raise RuntimeError(f"python {' '.join(arguments[:2])} ... exited {done.returncode}: "
                               f"{done.stderr.strip()[-1500:]}")
        facts = json.loads(report.read_text()) if report.stat().st_size else {}
    finally:
        report.unlink(missing_ok=True)
    return {"wall_s": round(wall, 4), **facts, "returncode": done.returncode, "stdout": done.stdout,
            "stderr": done.stderr}


def moetools_home() -> Path:
    """Where the benchmarks keep what they train (``$MOETOOLS_HOME``, else the checkout's .moetools/)."""
    return Path(os.environ.get("MOETOOLS_HOME", ROOT / ".moetools"))


#: what bin/_launch runs: the tool's click command, here under :func:`measured_python`'s measurement
LAUNCH = ("import sys; from moetools.cli import load_command; "
          "load_command(sys.argv[1]).main(args=sys.argv[2:], prog_name=sys.argv[1])")


def run_tool(tool: str, arguments: list[str], *, bench: str) -> float:
    """Run one of the suite's tools in a fresh, measured process; its wall seconds (a failure ends ``bench``)."""
    done = measured_python(["-c", LAUNCH, tool, *arguments], check=False)
    if done["returncode"] != 0:
        raise SystemExit(f"{bench}: {tool} {' '.join(arguments[:1])} failed "
                         f"(exit {done['returncode']}):\n{done['stderr'].strip()[-2000:]}")
    return done["wall_s"]


def train_resumable(command: list[str], out: Path, tokenizer: Path | None, *, bench: str) -> float:
    """monet-train ``command`` into ``out`` with the shared ``tokenizer`` when given, resuming a killed run
    from its checkpoint; its wall seconds."""
    command = [*command, *(["--tokenizer", str(tokenizer)] if tokenizer is not None else []),
               *(["--resume"] if (Path(out) / "checkpoint").is_dir() else [])]
    return run_tool("monet-train", command, bench=bench)


def _run_child(report: str, arguments: list[str]) -> int:
    """The ``--measure-child`` side: run ``python ARGUMENTS`` here, then write cpu_s and peak_rss_mb."""
    code = 0
    try:
        if arguments[0] == "-c":
            sys.argv = ["-c", *arguments[2:]]
            exec(compile(arguments[1], "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102 - python -c
        elif arguments[0] == "-m":
            sys.argv = [arguments[1], *arguments[2:]]
            runpy.run_module(arguments[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(arguments)
            sys.path.insert(0, str(Path(arguments[0]).resolve().parent))
            runpy.run_path(arguments[0], run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.stdout.flush()
        Path(report).write_text(json.dumps({"cpu_s": round(cpu_seconds(), 4), "peak_rss_mb": peak_rss_mb()}))
    return code


# -- the machine and the results ---------------------------------------------------------------------------

def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False)
        return done.stdout.strip() or None
    return None


def machine() -> dict:
    """The facts that make two runs comparable (or explain why they are not)."""
    memory_kb = 0
    with contextlib.suppress(OSError, ValueError):
        memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemTotal:"))
    return {
        "cpu_model": _cpu_model(), "cores_online": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_kb / 2**20, 1), "platform": platform.platform(),
        "python": platform.python_version(), "torch": _version("torch"), "transformers": _version("transformers"),
        "numpy": _version("numpy"), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "git_commit": _git_commit(), "started_utc": STARTED,
        "load_average_at_start": [round(value, 2) for value in LOAD_AT_START],
    }


def write_result(args: argparse.Namespace | Path, result: dict, *, quiet: bool = False) -> Path:
    """Write ``result`` + ``quick`` + ``machine`` as JSON to ``args.output`` (temporary name, then rename)."""
    path = Path(args.output) if isinstance(args, argparse.Namespace) else Path(args)
    quick = bool(getattr(args, "quick", False))
    document = {**result, "quick": quick, "machine": machine()}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    if not quiet:
        print(f"results: {path}", file=sys.stderr)
    return path


def read_result(path: Path) -> dict:
    """A results file written before (for benchmarks that add to it), or {} when there is none."""
    return json.loads(Path(path).read_text(encoding="utf-8")) if Path(path).is_file() else {}


if __name__ == "__main__" and sys.argv[1:2] == ["--measure-child"]:
    sys.exit(_run_child(sys.argv[2], sys.argv[3:]))
