"""The README's pipeline examples run as written, in bash with pipefail, on a tiny OLMoE and a real corpus file.

Also: the README's commands are the Makefile's targets, and .ci/run runs the full test run the README names.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moetools.streams import read_stream
from tests.tiny_models import save_tiny_olmoe

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
WORDS = ["the", "a", "of", "to", "and", "in", "is", "it", "that", "for", "on", "with", "code", "law", "math", "cell", "patient", "court", "theorem", "model"]


def readme_blocks(marker: str) -> list[str]:
    """Fenced sh blocks preceded by ``<!-- tested: MARKER -->``."""
    return re.findall(rf"<!-- tested: {marker} -->\n```sh\n(.*?)```", README, flags=re.DOTALL)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory with model/ (tiny random OLMoE + word-level tokenizer) and corpus.jsonl."""
    root = tmp_path_factory.mktemp("readme")
    save_tiny_olmoe(root / "model", WORDS)
    rng = np.random.default_rng(0)
    with open(root / "corpus.jsonl", "w") as handle:
        for number in range(16):
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(20, 60))))
            handle.write(json.dumps({"id": f"doc{number}", "text": text, "domain": ["law", "med"][number % 2]}) + "\n")
    return root


def test_readme_has_a_tested_pipeline_block():
    blocks = readme_blocks("pipeline")
    assert len(blocks) == 1 and "moe-trace model/ corpus.jsonl | moe-sample | moe-explain" in blocks[0]


@pytest.mark.slow  # the README pipeline in bash: every tool as a subprocess
def test_readme_pipeline_examples_run(workdir):
    block = readme_blocks("pipeline")[0]
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), str(REPO / "bin"),
                                                 os.environ["PATH"]])}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], check=False, cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    def data(name):
        with open(workdir / name, "rb") as handle:
            return list(read_stream(handle))

    labels = data("labels.jsonl")
    assert len(labels) == 16 and all(r["type"] == "label" for r in labels)  # 2 layers x 8 experts
    assert {r["layer"] for r in data("layer0.labels.jsonl")} == {0}
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["kind"] == "samples" and summary["complete"] is True
    for shard in ("shard-0.msgpack.zst", "shard-1.msgpack.zst"):
        assert data(shard)  # each shard holds part of the corpus
    first_two = [json.loads(line) for line in (workdir / "first-two.jsonl").read_text().splitlines()]
    assert [r["type"] for r in first_two] == ["header", "expert", "expert", "end"]


@pytest.mark.slow  # the README's acting chain in bash: score, select, mask, eval, tune, merge, report
def test_readme_acting_chain_runs(workdir):
    """Every stage of the block leaves what the next reads; the masked and merged models load in plain transformers."""
    from transformers import AutoModelForCausalLM

    blocks = readme_blocks("acting")
    assert len(blocks) == 1
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), str(REPO / "bin"),
                                                 os.environ["PATH"]])}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", blocks[0]], check=False, cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr

    def data(name):
        with open(workdir / name, "rb") as handle:
            return list(read_stream(handle, validate=True))

    scores = data("routing.scores.jsonl")
    assert len([r for r in scores if r["type"] == "expert"]) == 16  # 2 layers x 8 experts
    law = json.loads((workdir / "law.json").read_text())
    both = json.loads((workdir / "both.json").read_text())
    assert all(len(ids) == 2 for ids in law["experts"].values())
    assert all(set(law["experts"][layer]) <= set(both["experts"][layer]) for layer in law["experts"])
    evaluated = data("eval.jsonl")
    models = [r for r in evaluated if r["type"] == "model"]
    assert len(models) == 2 and models[1]["masked"] is not None  # the second is known to be a masked copy
    domains = {(r["model"], r["domain"]): r for r in evaluated if r["type"] == "domain"}
    assert set(domains) == {(0, "law"), (0, "med"), (1, "law"), (1, "med")}
    assert domains[(1, "law")]["delta_loss"] == domains[(1, "law")]["loss"] - domains[(0, "law")]["loss"] or \
        abs(domains[(1, "law")]["delta_loss"] - (domains[(1, "law")]["loss"] - domains[(0, "law")]["loss"])) < 1e-9
    masked = AutoModelForCausalLM.from_pretrained(workdir / "masked")
    merged = AutoModelForCausalLM.from_pretrained(workdir / "merged")
    assert masked.config.num_experts == 6 and merged.config.num_experts == 8
    html = (workdir / "acting.html").read_text()
    assert html.startswith("<!DOCTYPE html>") or html.lower().startswith("<!doctype html>")


def test_two_commands_are_make_targets_and_ci_runs_the_full_test_run():
    """`make demo` and `make test` come first; `make test-all` is the full run, and the one .ci/run makes."""
    commands = re.findall(r"^make ([\w-]+)\s+#", README, flags=re.MULTILINE)
    assert commands[:2] == ["demo", "test"] and "test-all" in commands
    makefile = (REPO / "Makefile").read_text()
    for target in set(commands):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE)
    assert re.search(r'^test:.*\n\t.*pytest -q -m "not slow" tests$', makefile, flags=re.MULTILINE)
    assert re.search(r"^test-all:.*\n\t.*pytest -q tests$", makefile, flags=re.MULTILINE)
    ci_commands = re.findall(r"^make [\w-]+$", (REPO / ".ci" / "run").read_text(), flags=re.MULTILINE)
    assert ci_commands == ["make test-all"]
