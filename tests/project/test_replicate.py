"""bench/replicate.py (`make replicate`): the 95% t-interval and verdicts, one replication end to end at the
--quick budget on the project corpus, and a second run that trains and measures nothing again."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


@pytest.fixture(scope="module")
def common():
    sys.path.insert(0, str(BENCH))
    try:
        from replication import common

        yield common
    finally:
        sys.path.remove(str(BENCH))


def test_interval_matches_the_t_distribution(common):
    ci = common.interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.303
    assert ci["n"] == 3 and ci["mean"] == pytest.approx(2.0) and ci["sd"] == pytest.approx(1.0)
    assert ci["low"] == pytest.approx(2 - 4.303 / math.sqrt(3)) and ci["high"] == pytest.approx(2 + 4.303 / math.sqrt(3))
    two = common.interval([0.5, 1.5])  # t(0.975, 1) = 12.706, sd = 1/sqrt(2), se = 1/2
    assert (two["low"], two["high"]) == (pytest.approx(1 - 12.706 / 2), pytest.approx(1 + 12.706 / 2))
    assert common.interval([4.0])["low"] is None and common.interval([])["mean"] is None
    assert common.interval([1.0, None, float("nan"), 3.0])["n"] == 2
    # beyond the table: within 0.003 of the exact quantiles t(0.975, 40) = 2.021, t(0.975, 120) = 1.980
    assert common.t_quantile(40) == pytest.approx(2.021, abs=3e-3)
    assert common.t_quantile(120) == pytest.approx(1.980, abs=3e-3)
    assert common.t_quantile(30) == 2.042


def test_verdicts_follow_the_interval_and_the_claimed_sign(common):
    assert common.verdict(common.interval([1.0, 1.1, 0.9])) == "reproduced"
    assert common.verdict(common.interval([1.0, 1.1, 0.9]), direction=-1) == "opposite"
    assert common.verdict(common.interval([-1.0, -1.1, -0.9]), direction=-1) == "reproduced"
    assert common.verdict(common.interval([-1.0, 1.0, 0.2])) == "not reproduced (null)"
    assert common.verdict(common.interval([1.0])).startswith("undecided")
    entry = common.claim("x", {0: 1.0, 1: 1.1, 2: 0.9})
    assert entry["verdict"] == "reproduced" and entry["per_seed"] == {0: 1.0, 1: 1.1, 2: 0.9} and entry["n"] == 3


def _corpus() -> Path:
    home = Path(os.environ.get("MOETOOLS_HOME") or ROOT / ".moetools")
    return home / "corpus"


def _run(home: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MOETOOLS_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(BENCH / "replicate.py"), "--quick", "--seeds", "0,1",
                           "--only", "sparse_probing", "-o", str(out)], env=env, cwd=ROOT, capture_output=True,
                          text=True, check=False)


@pytest.mark.slow
def test_quick_replication_end_to_end_then_resumed(tmp_path):
    corpus = _corpus()
    home = tmp_path / "home"
    home.mkdir()
    if (corpus / "train.jsonl").is_file():  # the checkout's; otherwise the driver builds one (~10 s), as on CI
        (home / "corpus").symlink_to(corpus.resolve())
    out = tmp_path / "replication.json"
    first = _run(home, out)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(out.read_text())
    entry = result["replications"]["sparse_probing"]
    main = entry["main"]
    assert entry["paper"].startswith("paper 002") and main["n"] == 2 and set(main["per_seed"]) == {"0", "1"}
    assert main["low"] <= main["mean"] <= main["high"]
    assert main["verdict"] in ("reproduced", "not reproduced (null)", "opposite")
    assert result["seeds"] == [0, 1] and result["device"] == "cpu" and result["budget"] == "quick"
    assert sorted(result["compute"]["this_run_trained"]) == ["dense-seed0", "dense-seed1", "moe-seed0", "moe-seed1"]
    stages = result["compute"]["stages"]
    assert {"sparse_probing/seed0/moe", "sparse_probing/seed1/dense", "train/moe-seed0"} <= set(stages)
    assert all(value["cpu_s"] > 0 and value["wall_s"] > 0 for value in stages.values())
    assert all(loss < math.log(512) for loss in (v["eval_loss_nats_per_token"] for v in result["models"].values()))
    assert "sparse_probing" in first.stdout  # the table
    stage_file = home / "replicate" / "quick" / "sparse_probing" / "seed0" / "moe.json"
    written = stage_file.stat().st_mtime_ns

    second = _run(home, out)  # resumed: every model and stage is there, nothing is trained or measured again
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads(out.read_text())
    assert again["compute"]["this_run_trained"] == []
    assert "monet-train" not in second.stderr and "moe-probe" not in second.stderr
    assert stage_file.stat().st_mtime_ns == written
    assert again["replications"]["sparse_probing"]["main"] == main


@pytest.mark.parametrize("args", [["--seeds", "a"], ["--seeds", ","]])
def test_bad_seeds_are_one_line_and_exit_2(args, tmp_path):
    done = subprocess.run([sys.executable, str(BENCH / "replicate.py"), "--quick", *args, "-o", str(tmp_path / "r.json")],
                          env={**os.environ, "MOETOOLS_HOME": str(tmp_path)}, cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2 and done.stderr.startswith("replicate: --seeds") and done.stderr.count("\n") == 1
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "replicate").exists()
