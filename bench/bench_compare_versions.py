"""Run benches in two source trees side by side and record new/old ratios, and compare their streams' bytes.

Each bench runs with --quick for each version, alternating old/new per round (round 1 old first, round 2 new
first, ...) so both see the same machine load. Both versions use this interpreter and the NEW bench scripts
(bench/_harness.py measures both the same way): the old version is a copy of the old tree whose bench/ is
replaced by this tree's bench/*.py, so the scripts import the old library (checked: moetools.__file__ of each
version is recorded). Where a new script calls something the old library spells differently, a recorded
text edit of the copy (``SHIMS``) adapts it; each edit must match exactly once. A figure is "worse" only if
the mean new/old ratio is worse than 1 by more than the noise: the larger relative spread (max / min - 1)
of one version's runs over the rounds (one round: no verdict).

    .venv/bin/python bench/bench_compare_versions.py --old /tmp/before [--old-label a116deb] [--rounds 2]
        [--bench trace sample ...] [--no-bytes] [--conditions TEXT]
    .venv/bin/python bench/bench_compare_versions.py --old /tmp/before --quick   # one round

The stream-bytes comparison (bench/_stream_bytes.py: moe-trace -> moe-sample -> moe-explain --backend
offline, moe-score on a tiny model, with each tree's own library) runs once, before the benches.
Writes bench/results/redesign2_comparison.json after each bench (an interrupted run keeps what it did);
bench/results/redesign_comparison.json is the earlier step's (trace and sample only). With
--update-results each bench's own results file gets the new version's last --quick run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import ROOT, parser, write_result
from _stream_bytes import compare_trees


def _pick(prefix: str):
    """The entry of a map whose key starts with ``prefix`` (bench_mask names its runs by their sizes)."""
    return lambda mapping: next(value for key, value in mapping.items() if key.startswith(prefix))


# bench -> {figure: (path into its results JSON, True if higher is better)}; a path step is a key, a list index,
# or a function of the value there. "over" figures are ratios to the bare work the bench measures beside it.
FIGURES = {
    "trace": {"tokens_per_s_trace": (("throughput", "tokens_per_s", "trace"), True),
              "trace_seconds_over_bare": (("throughput", lambda t: t["seconds"]["trace"] / t["seconds"]["bare_keep1"]),
                                          False),
              "peak_rss_mb_small": (("peak_rss", "small", "peak_rss_mb"), False),
              "peak_rss_mb_large": (("peak_rss", "large", "peak_rss_mb"), False)},
    "sample": {"best_seconds": (("sample", "best_seconds"), False),
               "tokens_per_s": (("sample", "tokens_per_s"), True),
               "peak_rss_mb_large": (("peak_rss", "large_mb"), False),
               "peak_rss_mb_small": (("peak_rss", "small_mb"), False)},
    "score": {"score_seconds": (("runs", "score", "seconds"), False),
              "score_over_read_cpu": (("score_over_read_cpu",), False),
              "peak_rss_mb_score": (("runs", "score", "peak_rss_mb"), False),
              "kmeans_seconds": (("kmeans", "seconds"), False)},
    "explain": {"labels_per_s_c32": (("concurrency_32", "labels_per_second"), True),
                "cached_rerun_seconds": (("cached_rerun", "seconds"), False),
                "cached_rerun_process_seconds": (("cached_rerun_process", "seconds"), False),
                "peak_rss_mb_whole_run": (("whole_run", "peak_rss_mb"), False)},
    "mask": {"pruned_mask_seconds": (("masking", _pick("pruned"), "mask_seconds"), False),
             "pruned_peak_rss_mb": (("masking", _pick("pruned"), "peak_rss_mb"), False),
             "remote_peak_rss_over_weights": (("masking", _pick("remote"), "peak_rss_over_weights"), False),
             "pruned_dir_forward_over_base": (("forward_ratio_vs_base", "pruned_dir"), False)},
    "tune": {"experts_step_s": (("modes", "experts", "step_s_median"), False),
             "experts_train_peak_mb": (("modes", "experts", "train_peak_mb"), False),
             "full_train_peak_mb": (("modes", "full", "train_peak_mb"), False),
             "experts_over_full_train_peak": (("ratios", "experts_over_full_train_peak"), False)},
    "streams": {"zstd_write_mb_s": (("results", 0, "write_mb_s"), True),  # results[0]: msgpack+zstd, level 1
                "zstd_read_mb_s": (("results", 0, "read_mb_s"), True),
                "zstd_write_peak_rss_mb": (("results", 0, "write_peak_rss_mb"), False),
                "zstd_read_peak_rss_mb": (("results", 0, "read_peak_rss_mb"), False)},
}
# bench script -> (text in the new script, what the old library needs instead, why); applied to the old copy only
SHIMS = {
    "bench_trace.py": [("from moetools.trace.run import TRACE_ZSTD_LEVEL",
                        "from moetools.trace.command import TRACE_ZSTD_LEVEL",
                        "the old library keeps TRACE_ZSTD_LEVEL (7 in both) in moetools.trace.command")],
    "bench_sample.py": [('"-q", "--force", ', '"-q", ',
                         "the old moe-sample has no --force: it overwrote its output without one")],
    "bench_score.py": [('"-q", "--force", ', '"-q", ',
                        "the old moe-score has no --force: it overwrote its output without one")],
}
SCRIPTS_USED = {"trace": ["bench_trace.py"], "sample": ["bench_sample.py", "bench_trace.py"],
                "score": ["bench_score.py", "bench_sample.py", "bench_trace.py"]}


def figures(bench: str, result: dict) -> dict:
    out = {}
    for name, (path, _) in FIGURES[bench].items():
        value = result
        for step in path:
            value = step(value) if callable(step) else value[step]
        out[name] = value
    return out


def old_with_new_benches(old: Path, target: Path) -> list[dict]:
    """A copy of the old tree whose bench/ holds this tree's bench scripts, shimmed; the edits made."""
    shutil.copytree(old, target, symlinks=True, ignore=shutil.ignore_patterns(".venv", ".moetools", "__pycache__"))
    shutil.rmtree(target / "bench")
    (target / "bench").mkdir()
    for script in (ROOT / "bench").glob("*.py"):
        shutil.copy(script, target / "bench" / script.name)
    edits = []
    for name, replacements in SHIMS.items():
        path = target / "bench" / name
        text = path.read_text()
        for before, after, why in replacements:
            count = text.count(before)
            if count == 0:
                raise SystemExit(f"shim for {name} no longer matches: {before!r}")
            text = text.replace(before, after)
            edits.append({"script": name, "replaced": before, "by": after, "times": count, "why": why})
        path.write_text(text)
    return edits


def library(tree: Path) -> str:
    """Where ``tree`` imports moetools from, resolved (so a copy names the library it holds)."""
    done = subprocess.run([sys.executable, "-c", "import moetools; print(moetools.__file__)"], cwd=tree,
                          env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def run(tree: Path, bench: str, output: Path, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    load = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(tree / "bench" / f"bench_{bench}.py"), "--quick", "--output",
                           str(output), *extra], cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench_{bench} in {tree} failed:\n{done.stderr[-2000:]}")
    result = json.loads(output.read_text())
    return {"wall_s": round(time.perf_counter() - started, 2), "load_average_at_start": [round(x, 2) for x in load],
            "figures": figures(bench, result), "result": result}


def verdicts(bench: str, rounds: list[dict]) -> dict:
    verdict = {}
    for name, (_, higher_better) in FIGURES[bench].items():
        mean = sum(r["ratio_new_over_old"][name] for r in rounds) / len(rounds)
        worse_by = (1 - mean) if higher_better else (mean - 1)
        noise = None
        if len(rounds) > 1:  # the largest spread of one version's runs: max / min - 1
            noise = max(max(runs) / min(runs) - 1 for runs in
                        ([r[v]["figures"][name] for r in rounds] for v in ("old", "new")))
        verdict[name] = {"higher_is_better": higher_better, "mean_ratio": mean, "worse_by": worse_by,
                         "noise": noise, "worse_beyond_noise": None if noise is None else worse_by > noise}
    return verdict


def main() -> None:
    options = parser(__doc__, "redesign2_comparison")  # --quick: one round (the benches always run --quick)
    options.add_argument("--old", type=Path, required=True, help="the old source tree (e.g. a git archive of it)")
    options.add_argument("--old-label", default=None, help="what the old tree is (a commit)")
    options.add_argument("--rounds", type=int, default=None, help="2 (--quick: 1)")
    options.add_argument("--bench", nargs="+", default=list(FIGURES), choices=list(FIGURES))
    options.add_argument("--no-bytes", action="store_true", help="skip the stream-bytes comparison")
    options.add_argument("--conditions", default="", help="what else ran on the machine meanwhile")
    options.add_argument("--update-results", action="store_true",
                         help="also write each bench's results file (the new version's last --quick run)")
    args = options.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 2)
    old = args.old.resolve()
    new_commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip() or None
    report = {"old_tree": str(old), "old_label": args.old_label, "new_tree": ".", "new_commit": new_commit,
              "rounds": args.rounds, "benches_run_with_quick": True,
              "conditions": args.conditions + (" " if args.conditions else "") + (
                  "Old and new alternate per round (old first in odd rounds, new first in even ones), so a load "
                  "that changes slowly falls on both alike; each run's load average at its start is recorded."),
              "benches": {}}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as scratch:
        scratch = Path(scratch)
        trees = {"old": scratch / "old-library-new-benches", "new": ROOT}
        shims = old_with_new_benches(old, trees["old"])
        libraries = {version: library(tree) for version, tree in trees.items()}
        for version, tree in trees.items():
            where = Path(libraries[version]).resolve()
            if not where.is_relative_to(tree.resolve()):
                raise SystemExit(f"the {version} version imports moetools from {where}, not from {tree}")
        report["libraries"] = {"old": f"moetools/__init__.py of a copy of {old}", "new": "moetools/__init__.py"}
        if not args.no_bytes:
            started = time.perf_counter()
            report["stream_bytes"] = compare_trees(old, ROOT, scratch / "bytes")
            report["stream_bytes"]["wall_s"] = round(time.perf_counter() - started, 1)
            print(json.dumps({k: {o: c["identical_bytes"] for o, c in v.items()} for k, v in
                              report["stream_bytes"].items() if k in ("end_to_end", "same_inputs")}), flush=True)
            write_result(args, report, quiet=True)
        for bench in args.bench:
            scripts = SCRIPTS_USED.get(bench, [f"bench_{bench}.py"])
            entry = {"method": "the new tree's bench script in both versions; the old version imports the old "
                               "library (a copy of the old tree with the new bench/)",
                     "shims": [s for s in shims if s["script"] in scripts], "rounds": []}
            # one shared trace for moe-sample in both versions: moe-sample's input is the same bytes
            extra = ["--trace-cache", str(scratch / "sample-cache")] if bench == "sample" else []
            if extra:
                entry["method"] += "; one moe-trace output (--trace-cache, written by the first run) feeds every run"
            report["benches"][bench] = entry
            try:
                for number in range(args.rounds):
                    order = ("old", "new") if number % 2 == 0 else ("new", "old")
                    runs = {}
                    for version in order:
                        runs[version] = run(trees[version], bench, scratch / f"{bench}-{version}-{number}.json", extra)
                        print(f"{bench} round {number + 1} {version}: {runs[version]['figures']}", flush=True)
                    entry["rounds"].append({"order": order, "ratio_new_over_old": {
                        name: runs["new"]["figures"][name] / runs["old"]["figures"][name] for name in FIGURES[bench]},
                        **{v: {k: x for k, x in runs[v].items() if k != "result"} for v in runs}})
                    entry["verdict"] = verdicts(bench, entry["rounds"])
                    write_result(args, report, quiet=True)
            except RuntimeError as error:
                entry["error"] = str(error)[-1500:]
                print(f"{bench}: {entry['error']}", file=sys.stderr, flush=True)
                write_result(args, report, quiet=True)
                continue
            if args.update_results:
                (ROOT / "bench" / "results" / f"{bench}.json").write_text(
                    json.dumps(runs["new"]["result"], indent=2) + "\n")
    write_result(args, report, quiet=True)
    print(json.dumps({b: v.get("verdict", v.get("error")) for b, v in report["benches"].items()}, indent=1))


if __name__ == "__main__":
    main()
