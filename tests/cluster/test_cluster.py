"""The cluster recipes the package ships (moetools/cluster) run end to end under a stand-in Slurm.

`sbatch` and `srun` are tests/fake_slurm.py's: they set the environment variables Slurm sets and run the
jobs on this machine (two array tasks; two "nodes" of one torchrun process each). Everything else is real:
the scripts as shipped, moe-trace / moe-cat / moe-tune from PATH, torchrun's c10d rendezvous, gloo.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from moetools.cluster import DIRECTORY, RECIPES, recipe_text
from moetools.streams import StreamReader
from tests.fake_slurm import install as install_fake_slurm
from tests.tiny_models import save_tiny_olmoe

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
WORDS = ["the", "a", "of", "cat", "dog", "sat", "on", "mat", "pain", "fever", "cough", "doctor", "dose", "court",
         "law", "judge", "appeal", "code", "loop", "def"]


def write_corpus(path: Path, documents: int = 10) -> Path:
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as handle:
        for number in range(documents):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(4, 30)))
            handle.write(json.dumps({"id": f"doc{number}", "text": text, "domain": "all"}) + "\n")
    return path


def cluster_environment(work: Path, **settings) -> dict:
    """The login node's environment: the fake Slurm, this checkout's tools and the venv's torchrun on PATH."""
    fake = install_fake_slurm(work / "fake-slurm")
    path = os.pathsep.join([str(fake), str(ROOT / "bin"), str(VENV_BIN), os.environ["PATH"]])
    return {**os.environ, "PATH": path, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            "FAKE_SLURM_STATE": str(work / "slurm-state"), **{k: str(v) for k, v in settings.items()}}


def submit(script: str, work: Path, environment: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(DIRECTORY / script)], cwd=work, env=environment, capture_output=True,
                          text=True, check=False, timeout=600)


def logs(work: Path) -> str:
    return "\n".join(f"== {path.name}\n{path.read_text()}" for path in sorted((work / "logs").glob("*")))


def canonical(record) -> str:
    return json.dumps({name: (value.dtype.str, value.shape, value.tobytes().hex()) if isinstance(value, np.ndarray)
                       else value for name, value in record.items()}, sort_keys=True, default=str)


def test_every_recipe_is_shipped_checks_its_settings_and_parses():
    for names in RECIPES.values():
        for name in names:
            path = DIRECTORY / name
            text = path.read_text(encoding="utf-8")
            assert text.startswith("#!/bin/bash\n") and os.access(path, os.X_OK), name
            assert "set -euo pipefail" in text and "bin/moe-" not in text, name
            assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0, name


@pytest.mark.parametrize("tool", sorted(RECIPES))
def test_the_man_page_and_the_readme_show_the_recipes_as_shipped(tool):
    from moetools.cli import load_command
    from moetools.cli.manpage import escape, render_command

    examples = render_command(tool, load_command(tool)).split(".SH EXAMPLES\n", 1)[1]
    for name in RECIPES[tool]:
        assert escape(recipe_text(name).rstrip("\n")) in examples, name
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"bash {RECIPES[tool][0]}" in readme and "python -m moetools.cluster" in readme
    printed = subprocess.run([sys.executable, "-m", "moetools.cluster"], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert Path(printed.stdout.strip()) == DIRECTORY


@pytest.mark.parametrize("script,missing", [("trace-submit.sh", "MODEL"), ("trace-array.sh", "MODEL"),
                                            ("tune-submit.sh", "MODEL"), ("tune-nodes.sh", "MODEL")])
def test_a_missing_setting_stops_the_script_before_anything_is_queued(tmp_path, script, missing):
    environment = cluster_environment(tmp_path)
    result = submit(script, tmp_path, environment)
    assert result.returncode != 0 and f"{missing}: set {missing}" in result.stderr
    assert not (tmp_path / "slurm-state").exists() and not (tmp_path / "logs").exists()


@pytest.mark.slow  # two moe-trace processes, a join, and an unsharded trace to compare with
def test_trace_array_and_join_give_the_unsharded_trace(tmp_path):
    from moetools.cli.trace import command as trace

    model = tmp_path / "model"
    save_tiny_olmoe(model, WORDS)
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    options = "--device cpu --max-length 16 --batch-size 1 -q"
    environment = cluster_environment(tmp_path, MODEL=model, CORPUS=corpus, SHARDS=2, TRACE_OPTIONS=options)
    result = submit("trace-submit.sh", tmp_path, environment)
    assert result.returncode == 0, result.stderr + logs(tmp_path)
    assert "queued moe-trace array 1000 (2 tasks) and its join 1001; logs in logs/" in result.stdout
    assert (tmp_path / "slurm-state" / "1000.status").read_text() == "0", logs(tmp_path)
    assert (tmp_path / "slurm-state" / "1001.status").read_text() == "0", logs(tmp_path)
    assert sorted(path.name for path in (tmp_path / "logs").iterdir()) == \
        ["trace-1000_0.log", "trace-1000_1.log", "trace-join-1001.log"]
    assert "joined 2 shards into trace.msgpack.zst" in (tmp_path / "logs" / "trace-join-1001.log").read_text()
    joined = tmp_path / "trace.msgpack.zst"
    assert not (tmp_path / "trace.msgpack.zst.partial").exists()

    whole = tmp_path / "whole.msgpack.zst"
    traced = CliRunner().invoke(trace, [str(model), str(corpus), *options.split(), "-o", str(whole)])
    assert traced.exit_code == 0, traced.output
    with open(joined, "rb") as sharded_file, open(whole, "rb") as whole_file:
        sharded, unsharded = list(StreamReader(sharded_file, kinds="trace")), list(StreamReader(whole_file, kinds="trace"))
    assert len(sharded) == len(unsharded) > 2
    assert sorted(map(canonical, sharded)) == sorted(map(canonical, unsharded))


@pytest.mark.slow
def test_trace_join_refuses_when_a_shard_failed(tmp_path):
    model = tmp_path / "model"
    save_tiny_olmoe(model, WORDS)
    environment = cluster_environment(tmp_path, MODEL=model, CORPUS=tmp_path / "missing.jsonl", SHARDS=2,
                                      TRACE_OPTIONS="--device cpu -q")
    assert submit("trace-submit.sh", tmp_path, environment).returncode == 0
    assert (tmp_path / "slurm-state" / "1000.status").read_text() == "2"  # moe-trace: usage error
    assert "missing.jsonl" in (tmp_path / "logs" / "trace-1000_0.log").read_text()
    assert (tmp_path / "slurm-state" / "1001.status").read_text() == "DependencyNeverSatisfied"
    assert not (tmp_path / "trace.msgpack.zst").exists()


@pytest.mark.slow  # two torchrun agents (one process each) meeting at a c10d rendezvous, then the merge
def test_tune_on_two_nodes_under_srun_torchrun_then_merge(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tmp_path / "model"
    save_tiny_olmoe(model, WORDS)
    data = write_corpus(tmp_path / "train.jsonl", documents=16)
    (tmp_path / "experts.json").write_text(json.dumps({"experts": {"0": [1, 3], "1": [5]}}))
    options = "--mode experts --experts experts.json --steps 2 --batch-size 4 --seq-len 12"
    port = 29500 + random.Random(str(tmp_path)).randrange(2000)
    environment = cluster_environment(tmp_path, MODEL=model, DATA=data, TUNE_OPTIONS=options, NODES=2,
                                      GPUS_PER_NODE=1, RDZV_PORT=port)
    result = submit("tune-submit.sh", tmp_path, environment)
    assert result.returncode == 0, result.stderr + logs(tmp_path)
    assert "queued moe-tune 1000 (2 nodes x 1) and its merge 1001; logs in logs/" in result.stdout
    assert (tmp_path / "slurm-state" / "1000.status").read_text() == "0", logs(tmp_path)
    assert (tmp_path / "slurm-state" / "1001.status").read_text() == "0", logs(tmp_path)
    assert '"world_size": 2' in (tmp_path / "tuned" / "tune.json").read_text()  # both "nodes" joined
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert merged.config.num_experts == 8 and merged.config.moetools_tuned["mode"] == "experts"
