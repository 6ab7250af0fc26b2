"""Every tool answers --help, --version and usage errors without importing torch or transformers.

Why: `moe-trace --help` took 6.6 s because the CLI module imported the trace library
(and so torch) at module level. The test measures the import set, not the time: each tool runs in
a fresh interpreter and reports which heavy packages ``sys.modules`` holds afterwards. It iterates
``moetools.cli.TOOLS``, so a new tool is covered the day it is added.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moetools.cli import TOOLS

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers")
#: what each run asks; a usage error must exit 2, and the missing input is whatever the tool's
#: first positional argument is (a stream, a model directory...): any exit but 0 and no torch
CASES = {"help": (["--help"], (0,)), "version": (["--version"], (0,)), "bad-flag": (["--no-such-option"], (2,)),
         "missing-file": (["/nonexistent/input.msgpack.zst"], (1, 2, 3))}

PROBE = """
import contextlib, io, json, sys
from moetools.cli import load_command
name, args = sys.argv[1], json.loads(sys.argv[2])
out = io.StringIO()
code = None
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    try:
        load_command(name).main(args=args, prog_name=name)
    except SystemExit as done:
        code = done.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers"})
print(json.dumps({"code": code, "heavy": heavy, "output": out.getvalue()[-4000:]}))
"""


def probe(tool: str, args: list[str]) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, tool, json.dumps(args)], cwd=REPO, capture_output=True, check=False,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_tool_answers_without_torch(tool, case):
    args, codes = CASES[case]
    answer = probe(tool, args)
    assert answer["code"] in codes, answer
    assert answer["heavy"] == [], f"{tool} {' '.join(args)} imported {answer['heavy']}"


def test_list_models_answers_without_torch():
    answer = probe("moe-trace", ["--list-models"])
    assert answer["code"] == 0 and answer["heavy"] == [], answer
    assert "olmoe" in answer["output"] and "monet" in answer["output"]
