"""moe-select's criteria on a hand-made scores stream whose answers are known."""

from __future__ import annotations

import json

import pytest

from moetools.cli.select import command as moe_select

MODEL = {"name": "hand", "path": None, "model_type": "olmoe", "num_layers": 2, "moe_layers": [0, 1],
         "num_experts": 4, "top_k": 2, "fingerprint": "sha256:" + "5e" * 32}
DAS = {0: [0.3, -0.1, 0.2, 0.05], 1: [-0.2, 0.4, 0.1, None]}
SKEW = {0: [("med", 3.0, 0.01), ("law", 2.5, 0.2), ("med", 1.5, 0.5), ("med", None, 0.03)],
        1: [("law", 4.0, 0.04), ("med", 2.1, 0.04), (None, None, None), ("law", 1.0, 1.0)]}
PEARSON = {0: [0.25, 0.05, -0.3, 0.12], 1: [0.11, None, 0.2, 0.0]}


@pytest.fixture
def scores(make_stream, tmp_path):
    records = []
    for layer in (0, 1):
        for e in range(4):
            domain, ratio, q = SKEW[layer][e]
            records.append({"type": "expert", "layer": layer, "expert": e,
                            "domains": {"med": {"das": DAS[layer][e]}, "law": {"das": 0.0}},
                            "skew": {"domain": domain, "ratio": ratio, "specialised": ratio is None and domain
                                     is not None or (ratio or 0) >= 2, "p": q, "q": q},
                            "pearson": PEARSON[layer][e]})
    path = tmp_path / "s.scores.jsonl"
    path.write_bytes(make_stream(records, kind="scores", model=MODEL, encoding="jsonl",
                                 header_extra={"layers": [0, 1], "num_experts": 4, "domains": ["med", "law"]}))
    return str(path)


def select(run_tool, scores, *args):
    result = run_tool(moe_select, [scores, *args])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    return {int(k): v for k, v in data["experts"].items()}, data["moetools"]


def test_top_bottom_top_total_threshold(run_tool, scores):
    assert select(run_tool, scores, "--by", "das", "--domain", "med", "--top", "2")[0] == {0: [0, 2], 1: [1, 2]}
    assert select(run_tool, scores, "--by", "das", "--domain", "med", "--bottom", "1")[0] == {0: [1], 1: [0]}
    assert select(run_tool, scores, "--by", "das", "--domain", "med", "--top-total", "3")[0] == {0: [0, 2], 1: [1]}
    got, block = select(run_tool, scores, "--by", "das", "--domain", "med", "--threshold", "0.1")
    assert got == {0: [0, 2], 1: [1, 2]} and block["scores"]["1"] == {"1": 0.4, "2": 0.1}
    # null values are never selected, not even by --bottom
    assert 3 not in select(run_tool, scores, "--by", "das", "--domain", "med", "--bottom", "4")[0][1]


def test_skew_criterion_with_and_without_q(run_tool, scores):
    assert select(run_tool, scores, "--min-ratio", "2", "--domain", "med")[0] == {0: [3, 0], 1: [1]}
    assert select(run_tool, scores, "--by", "skew", "--domain", "law")[0] == {0: [1], 1: [0]}
    assert select(run_tool, scores, "--min-ratio", "2", "--domain", "med", "--max-q", "0.035")[0] == \
        {0: [3, 0], 1: []}


def test_pearson_thresholds_of_monet(run_tool, scores):
    for threshold, expected in ((0.2, {0: [0], 1: [2]}), (0.1, {0: [0, 3], 1: [2, 0]}),
                                (0.05, {0: [0, 3, 1], 1: [2, 0]})):
        got, block = select(run_tool, scores, "--min-correlation", str(threshold))
        assert got == expected and block["criterion"]["by"] == "pearson"


def test_random_control_is_seeded(run_tool, scores):
    first = select(run_tool, scores, "--random", "2", "--seed", "1")[0]
    assert first == select(run_tool, scores, "--random", "2", "--seed", "1")[0]
    assert all(len(ids) == 2 and len(set(ids)) == 2 and max(ids) < 4 for ids in first.values())


@pytest.mark.parametrize("args, message", [
    (["--by", "das", "--domain", "med", "--top", "1", "--bottom", "1"], "give one of"),
    (["--top", "2"], "say what to select by"),
    (["--by", "nothing", "--domain", "med", "--top", "1"], "no expert record has metric 'nothing'"),
    (["--by", "das", "--domain", "finance", "--top", "1"], "domain 'finance' is not in the scores"),
    (["--by", "skew"], "--by skew needs --domain"),
    (["--by", "das", "--random", "2"], "--random picks experts by chance"),
    (["--by", "das", "--domain", "med", "--cumulative", "1.5"], "--cumulative takes a share"),
])
def test_usage_errors_name_the_problem(run_tool, scores, args, message):
    result = run_tool(moe_select, [scores, *args])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1


def test_scores_of_two_models_are_refused(run_tool, scores, make_stream, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_bytes(make_stream([{"type": "expert", "layer": 0, "expert": 0, "domains": {"med": {"das": 1.0}}}],
                                  kind="scores", encoding="jsonl", model=dict(MODEL, fingerprint="sha256:x"),
                                  header_extra={"layers": [0, 1], "num_experts": 4, "domains": ["med"]}))
    result = run_tool(moe_select, [scores, str(other), "--by", "das", "--domain", "med", "--top", "1"])
    assert result.exit_code == 2 and "different models" in result.stderr
