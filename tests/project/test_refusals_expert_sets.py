"""Expert ids and layers out of range are refused (exit 2, naming the set, the layer and the id), never
written out or dropped: by every reader of expert sets, by the set algebra, and by moe-score on traces."""

from __future__ import annotations

import json

import pytest

from moetools.cli.score import command as moe_score
from moetools.cli.select import command as moe_select
from moetools.errors import FormatError
from moetools.select import ExpertSet, complement, read_experts, union
from tests.trace_factory import make_records, write_trace

MODEL = {"name": "olmoe-tiny", "path": None, "model_type": "olmoe", "num_layers": 2, "moe_layers": [0, 1],
         "num_experts": 8, "top_k": 2, "fingerprint": "sha256:" + "ab" * 32}


def write_set(path, experts: dict, model: dict | None = MODEL):
    data = {"experts": {str(k): v for k, v in experts.items()}, "shared_experts": False, "non_expert_modules": False}
    if model is not None:
        data["moetools"] = {"version": 1, "model": model}
    path.write_text(json.dumps(data))
    return path


def assert_refused(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == "", result.stdout  # nothing written
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("experts, named", [({0: [1], 1: [8]}, "layer 1: expert id 8 out of range"),
                                            ({0: [1], 99: [2]}, "layer 99 is not an MoE layer")])
def test_union_refuses_a_set_beyond_its_own_model(run_tool, tmp_path, experts, named):
    wide = write_set(tmp_path / "wide.json", experts)
    fine = write_set(tmp_path / "fine.json", {0: [2], 1: [3]})
    result = run_tool(moe_select, ["union", str(fine), str(wide)])
    assert_refused(result, str(wide), named)
    with pytest.raises(FormatError, match=named):  # every reader: read_experts without a model too
        read_experts(wide)


def test_set_algebra_checks_an_esft_file_against_the_other_operands_model(run_tool, tmp_path):
    esft = write_set(tmp_path / "esft.json", {0: [1, 8]}, model=None)  # no model block of its own
    fine = write_set(tmp_path / "fine.json", {0: [2]})
    for op in ("union", "intersect", "minus"):
        assert_refused(run_tool(moe_select, [op, str(fine), str(esft)]), str(esft), "layer 0: expert id 8")


def test_complement_refuses_ids_beyond_num_experts_instead_of_dropping_them(run_tool, tmp_path):
    esft = write_set(tmp_path / "esft.json", {0: [1, 4, 5, 6], 1: [0]}, model=None)
    result = run_tool(moe_select, ["complement", str(esft), "--num-experts", "4", "--layers", "0-1"])
    assert_refused(result, str(esft), "layer 0: expert id 4 out of range", "4 experts per layer")
    outside = write_set(tmp_path / "outside.json", {0: [1], 5: [2]}, model=None)
    result = run_tool(moe_select, ["complement", str(outside), "--num-experts", "4", "--layers", "0-1"])
    assert_refused(result, str(outside), "layer 5 is not an MoE layer")
    # in range: the complement is exact
    good = write_set(tmp_path / "good.json", {0: [1, 3], 1: [0]}, model=None)
    result = run_tool(moe_select, ["complement", str(good), "--num-experts", "4", "--layers", "0-1"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["experts"] == {"0": [0, 2], "1": [1, 2, 3]}


def test_library_set_algebra_uses_the_same_check():
    with pytest.raises(FormatError, match="layer 0: expert id 9"):
        union(ExpertSet(experts={0: [1]}, model=MODEL), ExpertSet(experts={0: [9]}))
    with pytest.raises(FormatError, match="layer 0: expert id 6"):
        complement(ExpertSet(experts={0: [6]}), num_experts=4, layers=[0])


def test_moe_score_refuses_trace_ids_beyond_num_experts(run_tool, tmp_path):
    records = make_records(documents=4, tokens=40)
    records[1]["experts"][1, 3, 0] = 8  # layer index 1 = layer 2 of the header, token 3: id 8 of 8 experts
    trace = tmp_path / "bad.msgpack.zst"
    trace.write_bytes(write_trace(records))
    result = run_tool(moe_score, [str(trace), "--permutations", "0"])
    assert_refused(result, "'experts' holds id 8 (layer 2, token 3)", "num_experts (8)")
