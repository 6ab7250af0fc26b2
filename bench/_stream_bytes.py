"""Do two source trees write the same stream bytes? One small real pipeline run with each (bench_compare_versions).

moe-trace on a tiny random OLMoE (``moetools.testing.tiny_models.save_tiny_olmoe``, 2 layers x 8 experts, top-2)
over a 24-document corpus -> moe-sample -> moe-explain --backend offline, and moe-score on the trace. Each tree
runs its own tools (``PYTHONPATH`` = the tree) on copies of the same model and corpus, with the same paths:
in the same directory one after the other (headers record the model's absolute path). Two comparisons:

- ``end_to_end``: each tree's pipeline on its own outputs (the trace of each tree feeds its moe-sample ...);
- ``same_inputs``: the old tree's moe-sample, moe-explain and moe-score on the new tree's trace and samples,
  so that a difference in the trace does not show up again downstream.

Per output: whether the files' bytes are identical; if not, the decoded records are compared (zstd frames and
msgpack, or JSON lines, decoded here without moetools), the header and end record field by field, which gives
the dotted paths of the fields that differ with both values, and whether the data records are identical (also
with the fields that hold a measured time, ``seconds``, left out: moe-explain writes one per label).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

WORDS = ["the", "a", "of", "to", "and", "in", "is", "it", "that", "for", "on", "with", "code", "law", "math",
         "cell", "expert", "model", "token", "court", "patient", "theorem", "proof", "judge", "dose"]
# tool, inputs (relative names), output, options
PIPELINE = (
    ("moe-trace", ["model", "corpus.jsonl"], "trace.msgpack.zst", ["--max-length", "16", "--batch-size", "1"]),
    ("moe-sample", ["trace.msgpack.zst"], "samples.msgpack.zst", ["--top", "3", "--weighted", "1",
                                                                  "--negatives", "1"]),
    ("moe-explain", ["samples.msgpack.zst"], "labels.jsonl", ["--backend", "offline", "--no-cache"]),
    ("moe-score", ["trace.msgpack.zst"], "scores.jsonl", ["--permutations", "20"]),
)
TIMINGS = frozenset({"seconds"})  # fields that hold a measured time (moe-explain's labels and end record)
RUN_TOOL = ("import sys; from moetools.cli import load_command; "
            "load_command(sys.argv[1]).main(args=sys.argv[2:], prog_name=sys.argv[1])")


def build_inputs(tree: Path, directory: Path) -> None:
    """The tiny model (built with ``tree``'s moetools.testing) and a corpus with domains and a target field."""
    code = ("import sys; from moetools.testing.tiny_models import save_tiny_olmoe; "
            "save_tiny_olmoe(sys.argv[1], sys.argv[2].split(), seed=0)")
    subprocess.run([sys.executable, "-c", code, str(directory / "model"), " ".join(WORDS)], cwd=tree, check=True,
                   env={**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}, capture_output=True)
    lines = []
    for number in range(24):  # deterministic: word i of document n
        words = [WORDS[(number * 7 + i * (number % 5 + 1)) % len(WORDS)] for i in range(5 + number % 13)]
        lines.append(json.dumps({"id": f"doc{number}", "text": " ".join(words),
                                 "domain": ("law", "med", "code")[number % 3], "toxicity": number / 24}))
    (directory / "corpus.jsonl").write_text("\n".join(lines) + "\n")


def run_tool(tree: Path, workdir: Path, tool: str, arguments: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    done = subprocess.run([sys.executable, "-c", RUN_TOOL, tool, *arguments, "-q"], cwd=workdir, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} ({tree}) exited {done.returncode}: {done.stderr.strip()[-1500:]}")


def records(path: Path) -> list:
    """Every record of the stream at ``path`` (zstd + msgpack, msgpack, or JSON lines)."""
    import msgpack
    import zstandard

    data = path.read_bytes()
    if data[:4] == b"\x28\xb5\x2f\xfd":
        data = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True).read()
    if data[:1] == b"{":
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    return list(unpacker)


def _without(value, keys: frozenset):
    """``value`` without the fields named ``keys``, at any depth."""
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def field_differences(old, new, prefix: str = "") -> list:
    """[dotted path, old value, new value] for each leaf that differs (maps by key, lists by position)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append([path, _shown(old.get(key, "<absent>")), _shown(new.get(key, "<absent>"))])
            else:
                out += field_differences(old[key], new[key], path)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in field_differences(a, b, f"{prefix}[{i}]")]
    return [] if old == new else [[prefix, _shown(old), _shown(new)]]


def _shown(value):
    """A value as JSON can hold it: bytes (an array's data) as their length and digest."""
    import hashlib

    if isinstance(value, bytes):
        return f"<{len(value)} bytes, sha256 {hashlib.sha256(value).hexdigest()[:16]}>"
    if isinstance(value, dict):
        return {str(k): _shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown(v) for v in value]
    return value


def compare(old_path: Path, new_path: Path) -> dict:
    same = old_path.read_bytes() == new_path.read_bytes()
    result = {"identical_bytes": same, "bytes": {"old": old_path.stat().st_size, "new": new_path.stat().st_size}}
    if same:
        return result
    old, new = records(old_path), records(new_path)
    headers = [r for r in old if r.get("type") == "header"], [r for r in new if r.get("type") == "header"]
    ends = [r for r in old if r.get("type") == "end"], [r for r in new if r.get("type") == "end"]
    data = [r for r in old if r.get("type") not in ("header", "end")], \
        [r for r in new if r.get("type") not in ("header", "end")]
    differing = [i for i, (a, b) in enumerate(zip(*data)) if a != b]
    untimed = [_without(records, TIMINGS) for records in data]
    result.update({
        "header_fields_differ": field_differences(headers[0], headers[1]),
        "end_fields_differ": field_differences(ends[0], ends[1]),
        "data_records": {"old": len(data[0]), "new": len(data[1])},
        "data_records_identical": data[0] == data[1],
        "data_records_differing": len(differing) + abs(len(data[0]) - len(data[1])),
        "data_records_identical_but_timings": untimed[0] == untimed[1],
    })
    if differing:
        first = differing[0]
        result["first_differing_record"] = {"index": first,
                                            "fields": field_differences(data[0][first], data[1][first])[:8]}
    return result


def compare_trees(old: Path, new: Path, scratch: Path) -> dict:
    """Run the pipeline with both trees under ``scratch`` and compare every output (see the module's doc)."""
    inputs = scratch / "inputs"
    inputs.mkdir(parents=True)
    build_inputs(new, inputs)
    dirs = {name: scratch / name for name in ("old", "new", "old_on_new_inputs")}
    work = scratch / "run"  # every pass runs here (headers record the model's absolute path), then is renamed

    def one_pass(tree: Path, name: str, steps, given=()) -> None:
        shutil.copytree(inputs / "model", work / "model")
        shutil.copy(inputs / "corpus.jsonl", work / "corpus.jsonl")
        copied = set()
        for tool, sources, output, options in steps:
            for file in set(sources) & set(given) - copied:  # the new tree's file as input; this pass's kept aside
                if (work / file).exists():
                    (work / file).rename(work / f"old-{file}")
                shutil.copy(dirs["new"] / file, work / file)
                copied.add(file)
            run_tool(tree, work, tool, [*sources, *options, "-o", output])
        work.rename(dirs[name])

    one_pass(old, "old", PIPELINE)
    one_pass(new, "new", PIPELINE)
    one_pass(old, "old_on_new_inputs", PIPELINE[1:], given=("trace.msgpack.zst", "samples.msgpack.zst"))
    end_to_end = {output: compare(dirs["old"] / output, dirs["new"] / output) for _, _, output, _ in PIPELINE}
    same_inputs = {output: compare(dirs["old_on_new_inputs"] / (f"old-{output}" if tool == "moe-sample" else output),
                                   dirs["new"] / output)
                   for tool, _, output, _ in PIPELINE[1:]}  # moe-sample's output was kept aside as old-<name>
    return {"pipeline": [{"tool": tool, "inputs": sources, "options": options, "output": output}
                         for tool, sources, output, options in PIPELINE],
            "model": "moetools.testing.tiny_models.save_tiny_olmoe(seed=0), built with the new tree",
            "corpus": "24 documents, 5-17 words each, fields id, text, domain (law/med/code), toxicity",
            "environment": "OMP_NUM_THREADS=1, PYTHONHASHSEED=0, one process per tool, this interpreter",
            "end_to_end": end_to_end, "same_inputs": same_inputs}
