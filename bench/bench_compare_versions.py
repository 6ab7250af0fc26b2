"""Run benches in two source trees side by side and record new/old ratios.

Each bench runs with --quick in each tree (the old tree: `git archive` of the pre-redesign commit),
alternating old/new per round so both see the same machine load. Both trees use this interpreter; the
old one is imported from its own directory through PYTHONPATH (checked: moetools.__file__ is printed).
A figure is "worse" only if the mean new/old ratio is worse than 1 by more than the noise of two runs:
the larger relative spread between the two rounds of either tree.

    .venv/bin/python bench/bench_compare_versions.py --old /tmp/oldbench [--rounds 2] [--bench trace sample]
    .venv/bin/python bench/bench_compare_versions.py --old /tmp/oldbench --quick   # one round

Every bench_*.py takes ``--quick`` and ``-o/--output`` (bench/_harness.py), so any of them can be added to
FIGURES.

Writes bench/results/redesign_comparison.json; each bench's own results file gets the new tree's last run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import ROOT, parser, write_result

# bench -> {figure: (path into its results JSON, True if higher is better)}
FIGURES = {
    "trace": {"tokens_per_s_trace": (("throughput", "tokens_per_s", "trace"), True),
              "trace_seconds_over_bare": (None, False),  # seconds.trace / seconds.bare_keep1
              "peak_rss_mb_small": (("peak_rss", "small", "peak_rss_mb"), False),
              "peak_rss_mb_large": (("peak_rss", "large", "peak_rss_mb"), False)},
    "sample": {"best_seconds": (("sample", "best_seconds"), False),
               "tokens_per_s": (("sample", "tokens_per_s"), True),
               "peak_rss_mb_large": (("peak_rss", "large_mb"), False),
               "peak_rss_mb_small": (("peak_rss", "small_mb"), False)},
}


def figures(bench: str, result: dict) -> dict:
    out = {}
    for name, (path, _) in FIGURES[bench].items():
        if path is None:
            seconds = result["throughput"]["seconds"]
            out[name] = seconds["trace"] / seconds["bare_keep1"]
        else:
            value = result
            for key in path:
                value = value[key]
            out[name] = value
    return out


def run(tree: Path, bench: str, output: Path, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    where = subprocess.run([sys.executable, "-c", "import moetools; print(moetools.__file__)"], cwd=tree, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not where.startswith(str(tree.resolve())):
        raise SystemExit(f"{tree}: imports moetools from {where}, not from the tree")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(tree / "bench" / f"bench_{bench}.py"), "--quick", "--output",
                           str(output), *extra], cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_{bench} in {tree} failed:\n{done.stderr[-2000:]}")
    result = json.loads(output.read_text())
    return {"moetools": where, "wall_s": time.perf_counter() - started, "figures": figures(bench, result),
            "result": result}


def main() -> None:
    options = parser(__doc__, "redesign_comparison")  # --quick: one round (the benches always run --quick)
    options.add_argument("--old", type=Path, required=True, help="the old source tree")
    options.add_argument("--rounds", type=int, default=None, help="2 (--quick: 1)")
    options.add_argument("--bench", nargs="+", default=list(FIGURES), choices=list(FIGURES))
    args = options.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 2)
    trees = {"old": args.old.resolve(), "new": ROOT}
    report = {"old_tree": str(trees["old"]), "new_tree": str(ROOT), "benches_run_with_quick": True, "benches": {}}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as scratch:
        scratch = Path(scratch)
        for bench in args.bench:
            # one shared trace for moe-sample in both trees (the trace's bytes do not depend on the version)
            extra = ["--trace-cache", str(scratch / "sample-cache")] if bench == "sample" else []
            rounds = []
            for number in range(args.rounds):
                order = ("old", "new") if number % 2 == 0 else ("new", "old")
                runs = {}
                for version in order:
                    runs[version] = run(trees[version], bench, scratch / f"{bench}-{version}-{number}.json", extra)
                    print(f"{bench} round {number + 1} {version}: {runs[version]['figures']}", flush=True)
                ratios = {name: runs["new"]["figures"][name] / runs["old"]["figures"][name]
                          for name in FIGURES[bench]}
                rounds.append({"order": order, "ratio_new_over_old": ratios,
                               **{version: {k: v for k, v in runs[version].items() if k != "result"}
                                  for version in runs}})
                last_new = runs["new"]["result"]
            verdict = {}
            for name, (_, higher_better) in FIGURES[bench].items():
                mean = sum(r["ratio_new_over_old"][name] for r in rounds) / len(rounds)
                noise = max(abs(rounds[0][v]["figures"][name] / rounds[-1][v]["figures"][name] - 1)
                            for v in ("old", "new"))
                worse_by = (1 - mean) if higher_better else (mean - 1)
                verdict[name] = {"mean_ratio": mean, "worse_by": worse_by, "noise_two_runs": noise,
                                 "worse_beyond_noise": worse_by > noise}
            report["benches"][bench] = {"rounds": rounds, "verdict": verdict}
            (ROOT / "bench" / "results" / f"{bench}.json").write_text(json.dumps(last_new, indent=2) + "\n")
    write_result(args, report, quiet=True)
    print(json.dumps({b: v["verdict"] for b, v in report["benches"].items()}, indent=1))


if __name__ == "__main__":
    main()
