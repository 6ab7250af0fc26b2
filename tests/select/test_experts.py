"""experts.json (formats/experts.md): conformance files, the loader's model checks, set algebra, ESFT round trip."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from moetools.cli.select import command as moe_select
from moetools.errors import FormatError, ModelMismatchError, UsageError, VersionError
from moetools.select import ExpertSet, complement, intersect, minus, read_experts, union, write_experts

EXAMPLES = Path(__file__).resolve().parents[2] / "formats" / "examples" / "experts"
MANIFEST = json.loads((EXAMPLES / "manifest.json").read_text(encoding="utf-8"))
MODEL = {"name": "olmoe-tiny", "path": None, "model_type": "olmoe", "num_layers": 3, "moe_layers": [0, 1, 2],
         "num_experts": 8, "top_k": 2, "fingerprint": "sha256:" + "ab" * 32}
OTHER = dict(MODEL, name="other", fingerprint="sha256:" + "cd" * 32)


def test_every_example_is_in_the_manifest():
    on_disk = {str(p.relative_to(EXAMPLES)) for sub in ("valid", "invalid") for p in (EXAMPLES / sub).iterdir()}
    assert on_disk == set(MANIFEST["valid"]) | set(MANIFEST["invalid"])


@pytest.mark.parametrize("name", MANIFEST["valid"])
def test_valid_examples_load(name):
    chosen = read_experts(EXAMPLES / name)
    data = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    # read unchanged: what we would write back holds the same experts and flags
    again = chosen.to_json()
    assert again["experts"] == {k: v for k, v in data["experts"].items()}
    assert again["shared_experts"] == data.get("shared_experts", False)


@pytest.mark.parametrize("name", sorted(MANIFEST["invalid"]))
def test_invalid_examples_are_refused_naming_the_problem(name, run_tool):
    with pytest.raises(FormatError) as raised:
        read_experts(EXAMPLES / name)
    assert MANIFEST["invalid"][name] in str(raised.value)
    assert raised.value.exit_code == 2
    result = run_tool(moe_select, ["union", str(EXAMPLES / name)])
    assert result.exit_code == 2 and MANIFEST["invalid"][name] in result.stderr
    assert result.stderr.count("\n") == 1


def test_newer_block_version_is_a_version_error():
    with pytest.raises(VersionError):
        read_experts(EXAMPLES / "invalid" / "newer-version.json")


def make(experts, model=MODEL) -> ExpertSet:
    return ExpertSet(experts={k: list(v) for k, v in experts.items()}, model=model)


def test_applying_a_set_to_another_model_is_refused_naming_both_fingerprints(tmp_path):
    path = tmp_path / "set.json"
    write_experts(path, make({0: [1, 2], 1: [], 2: [7]}))
    assert read_experts(path, model=MODEL).items() == [(0, (1, 2)), (2, (7,))]
    with pytest.raises(ModelMismatchError) as raised:
        read_experts(path, model=OTHER)
    assert MODEL["fingerprint"] in str(raised.value) and OTHER["fingerprint"] in str(raised.value)
    assert raised.value.exit_code == 2
    smaller = dict(MODEL, num_experts=4, fingerprint=None)
    with pytest.raises(FormatError, match="expert id 7 out of range"):
        read_experts(path, model=smaller)
    fewer = dict(MODEL, moe_layers=[0, 1], fingerprint=None)
    with pytest.raises(FormatError, match="layer 2 is not an MoE layer"):
        read_experts(path, model=fewer)


def test_an_esft_file_round_trips_byte_for_value_and_loads_the_way_esft_reads_it(tmp_path):
    source = EXAMPLES / "valid" / "esft-law.json"
    chosen = read_experts(source)
    out = tmp_path / "again.json"
    write_experts(out, chosen)
    assert json.loads(out.read_text()) == json.loads(source.read_text())  # no moetools block added, order kept
    # ESFT's to_esft (esft.py): adapter_config['experts'][str(idx)] for each MoE layer, `expert_id in` that list
    with open(out) as handle:
        config = json.load(handle)
    for idx in (1, 2, 10, 11):
        trainable = config["experts"][str(idx)]
        assert all(isinstance(i, int) for i in trainable)
    assert config["shared_experts"] is False and config["non_expert_modules"] is False


# -- set algebra -----------------------------------------------------------------------------------

SETS = [make({0: [1, 2, 3], 1: [0], 2: []}), make({0: [3, 4], 1: [0, 5], 2: [6]}), make({0: [2], 1: [], 2: [6, 7]})]


def test_set_algebra_properties():
    a, b, c = SETS
    assert union(a, b).pairs() == a.pairs() | b.pairs()
    assert intersect(a, b).pairs() == a.pairs() & b.pairs()
    assert minus(a, b).pairs() == a.pairs() - b.pairs()
    for x, y in itertools.permutations(SETS, 2):
        assert union(x, y).pairs() == union(y, x).pairs()
        assert intersect(x, y).pairs() == intersect(y, x).pairs()
        assert minus(x, y).pairs() & y.pairs() == set()
        assert union(minus(x, y), intersect(x, y)).pairs() == x.pairs()
    assert union(a, union(b, c)).pairs() == union(union(a, b), c).pairs()
    everything = {(layer, i) for layer in MODEL["moe_layers"] for i in range(MODEL["num_experts"])}
    assert complement(a).pairs() == everything - a.pairs()
    assert complement(complement(a)).pairs() == a.pairs()
    # De Morgan
    assert complement(union(a, b)).pairs() == intersect(complement(a), complement(b)).pairs()
    # every MoE layer is written, with [] where empty (ESFT indexes every layer)
    assert set(intersect(a, c).to_json()["experts"]) == {"0", "1", "2"}


def test_combining_sets_of_different_models_is_refused():
    with pytest.raises(ModelMismatchError):
        union(SETS[0], make({0: [1]}, model=OTHER))


def test_complement_of_an_esft_file_needs_the_expert_count(run_tool, tmp_path):
    source = str(EXAMPLES / "valid" / "esft-law.json")
    with pytest.raises(UsageError, match="expert count"):
        complement(read_experts(source))
    result = run_tool(moe_select, ["complement", source])
    assert result.exit_code == 2 and "--num-experts" in result.stderr
    result = run_tool(moe_select, ["complement", source, "--num-experts", "64", "--layers", "1-26", "-o",
                                   str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "c.json").read_text())
    assert len(data["experts"]) == 26 and len(data["experts"]["1"]) == 64 - 9
    assert set(data["experts"]["3"]) == set(range(64))


def test_cli_set_algebra_writes_experts_json(run_tool, tmp_path):
    paths = []
    for n, chosen in enumerate(SETS[:2]):
        paths.append(str(tmp_path / f"{n}.json"))
        write_experts(paths[-1], chosen)
    for op, expected in (("union", union(*SETS[:2])), ("intersect", intersect(*SETS[:2])),
                         ("minus", minus(*SETS[:2]))):
        result = run_tool(moe_select, [op, *paths])
        assert result.exit_code == 0, result.stderr
        got = ExpertSet.from_json(json.loads(result.stdout))
        assert got.pairs() == expected.pairs() and got.model == MODEL
        assert got.provenance["criterion"]["op"] == op
    result = run_tool(moe_select, ["union", *paths, "--top", "3"])
    assert result.exit_code == 2 and "--top does not apply" in result.stderr
