"""bench/_harness.py measures what it says (a child's own peak RSS, not its parent's), and every benchmark uses it:
each takes --quick and -o/--output from it, and none imports from tests/.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(BENCH.glob("bench_*.py"))


@pytest.fixture(scope="module")
def harness():
    sys.path.insert(0, str(BENCH))
    try:
        import _harness

        yield _harness
    finally:
        sys.path.remove(str(BENCH))


def test_a_child_reports_its_own_peak_not_the_parents(harness):
    ballast = bytearray(300 * 2**20)  # this process: >= 300 MiB resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    assert harness.peak_rss_mb() >= 300
    small = harness.measured_python(["-c", "print('small')"])
    big = harness.measured_python(["-c", "b = bytearray(200 * 2**20); b[::4096] = b'y' * len(b[::4096]); print(len(b))"])
    del ballast
    assert small["stdout"] == "small\n" and small["returncode"] == 0
    assert small["peak_rss_mb"] < 100, small          # ru_maxrss would say >= 300 here (inherited across exec)
    assert 200 <= big["peak_rss_mb"] < 300, big
    assert big["cpu_s"] > 0 and big["wall_s"] >= big["cpu_s"] * 0.5


def test_a_child_runs_a_script_with_its_arguments_and_its_exit_status(harness, tmp_path):
    script = tmp_path / "child.py"
    script.write_text("import sys\nprint(sys.argv[1:])\nsys.exit(3)\n")
    done = harness.measured_python([str(script), "a", "--b"], check=False)
    assert done["stdout"] == "['a', '--b']\n" and done["returncode"] == 3 and done["peak_rss_mb"] > 0
    with pytest.raises(RuntimeError, match="exited 3"):
        harness.measured_python([str(script)])


def test_measure_resets_the_peak_for_the_block(harness):
    before = bytearray(150 * 2**20)
    before[::4096] = b"x" * len(before[::4096])
    del before
    with harness.measure(reset_peak=True) as cost:
        sum(range(10_000))
    assert cost["peak_rss_mb"] < harness.rss_mb() + 100 and cost["wall_s"] >= 0 and cost["cpu_s"] >= 0


def test_results_carry_quick_and_the_machine(harness, tmp_path):
    args = harness.parser("A benchmark.\n\nMore.", "example").parse_args(["--quick", "-o", str(tmp_path / "r.json")])
    harness.write_result(args, {"figure": 1.5}, quiet=True)
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["figure"] == 1.5 and written["quick"] is True
    machine = written["machine"]
    assert machine["cores_usable"] >= 1 and len(machine["load_average_at_start"]) == 3
    assert machine["torch"] and machine["transformers"] and machine["python"]
    default = harness.parser(None, "example").parse_args([])
    assert default.quick is False and default.output == BENCH / "results" / "example.json"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_every_benchmark_uses_the_harness_and_not_tests(script):
    source = script.read_text(encoding="utf-8")
    tree = ast.parse(source)
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "_harness" in imported, f"{script.name} does not use bench/_harness.py"
    assert "parser(__doc__" in source, f"{script.name}: its flags (--quick, -o) do not come from _harness.parser"
    helpers = {"tests", "tiny_models", "llm_stub", "trace_factory", "judge_fixture"}
    assert not {name.split(".")[0] for name in imported} & helpers, f"{script.name} imports from tests/"
    assert '"tests"' not in source and "ru_maxrss" not in source, f"{script.name}: tests/ on its path, or ru_maxrss"
