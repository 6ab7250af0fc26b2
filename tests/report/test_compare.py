"""moe-report A --compare B: two runs of one architecture on one page, their Δ and the routing change of paper 003;
runs of different layers x experts refused."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from moetools.cli import load_command
from moetools.report.page import read_data_block
from tests.trace_factory import make_records, write_trace


def run(name, args):
    return CliRunner().invoke(load_command(name), [str(a) for a in args])


def build_compare(folder):
    """Two traces of the same 2 layers x 8 experts (two seeds: "trained" and "random-init"), their scores, and
    the compare page of the two; returns the page's path."""
    for name, seed in (("trained", 0), ("init", 1)):
        (folder / f"{name}.msgpack.zst").write_bytes(write_trace(make_records(documents=8, tokens=150, seed=seed)))
        result = run("moe-score", [folder / f"{name}.msgpack.zst", "--permutations", "0", "-q",
                                   "-o", folder / f"{name}.scores.jsonl"])
        assert result.exit_code == 0, result.output
    out = folder / "compare.html"
    result = run("moe-report", [folder / "trained.msgpack.zst", folder / "trained.scores.jsonl",
                                "--compare", folder / "init.msgpack.zst", "--compare", folder / "init.scores.jsonl",
                                "--names", "trained,random-init", "-o", out, "-q"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    return folder, build_compare(folder)


def scores_of(path):
    return {(r["layer"], r["expert"]): r for r in map(json.loads, path.read_text().splitlines())
            if r.get("type") == "expert"}


def test_both_runs_values_and_their_difference_are_on_every_expert(two_runs):
    folder, out = two_runs
    data = read_data_block(out.read_text())
    assert data["compare"]["a"] == "trained" and data["compare"]["b"] == "random-init"
    trained, init = scores_of(folder / "trained.scores.jsonl"), scores_of(folder / "init.scores.jsonl")
    index = data["keys"].index("af:code")
    for entry in data["experts"]:
        key = (entry["l"], entry["e"])
        assert entry["v"][index] == pytest.approx(trained[key]["domains"]["code"]["af"], rel=1e-3)
        assert entry["b"]["v"][index] == pytest.approx(init[key]["domains"]["code"]["af"], rel=1e-3)
    assert any(m["title"].startswith("routing change") for m in data["maps"])


def test_the_routing_change_is_moe_scores_rc_against_the_other_run(two_runs):
    folder, out = two_runs
    result = run("moe-score", [folder / "init.msgpack.zst", "--rc-against", folder / "trained.msgpack.zst",
                               "--metrics", "rc_shift", "-q"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    data = read_data_block(out.read_text())
    assert data["compare"]["rc"] == pytest.approx(lines[-1]["summary"]["rc"], rel=1e-5)
    shifts = {(r["layer"], r["expert"]): r["rc_shift"] for r in lines if r.get("type") == "expert"}
    for entry in data["experts"]:
        assert entry["rs"] == pytest.approx(shifts[(entry["l"], entry["e"])], rel=1e-3)
    assert set(data["compare"]["jsd"]) == {"0", "2"} and all(0 < v < 1 for v in data["compare"]["jsd"].values())
    assert 'id=rc>RC = ' in out.read_text()


def test_runs_of_different_layers_or_experts_are_refused_saying_what_differs(two_runs, tmp_path):
    folder, _ = two_runs
    wider = tmp_path / "wide.msgpack.zst"
    wider.write_bytes(write_trace(make_records(documents=4, tokens=40, num_experts=16), num_experts=16))
    result = run("moe-report", [folder / "trained.msgpack.zst", "--compare", wider, "-o", tmp_path / "x.html"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cannot compare A with B: A has layers [0, 2] × 8 experts, B layers [0, 2] × 16" in result.output
    assert not (tmp_path / "x.html").exists()
    result = run("moe-report", [folder / "trained.msgpack.zst", "--names", "a,b", "-o", tmp_path / "x.html"])
    assert result.exit_code == 2 and "--names takes two names, A,B, and goes with --compare" in result.output


def test_two_label_sets_of_one_model_compare_label_by_label(two_runs, tmp_path):
    folder, _ = two_runs
    samples = tmp_path / "samples.msgpack.zst"
    assert run("moe-sample", [folder / "trained.msgpack.zst", "--top", "3", "-o", samples, "-q"]).exit_code == 0
    labels = tmp_path / "labels.jsonl"
    assert run("moe-explain", [samples, "--backend", "offline", "--no-cache", "-o", labels, "-q"]).exit_code == 0
    out = tmp_path / "labels.html"
    result = run("moe-report", [folder / "trained.scores.jsonl", labels, "--compare", folder / "trained.scores.jsonl",
                                "-o", out, "-q"])
    assert result.exit_code == 0, result.output
    data = read_data_block(out.read_text())
    assert (data["compare"]["a"], data["compare"]["b"]) == ("A", "B")          # one model: A and B
    assert all(entry["lab"] and "lab" not in entry["b"] for entry in data["experts"])
    assert all(entry["v"] == entry["b"]["v"] for entry in data["experts"])      # the same scores: Δ 0


def test_names_and_domains_given_as_markup_stay_text(two_runs, tmp_path):
    folder, _ = two_runs
    odd = tmp_path / "odd.msgpack.zst"
    markup = "<img src=x onerror=alert(1)>"
    odd.write_bytes(write_trace(make_records(documents=4, tokens=60, domains=("code", markup))))
    out = tmp_path / "odd.html"
    result = run("moe-report", [odd, "--compare", folder / "init.msgpack.zst", "--names", f"{markup},<b>b</b>",
                                "-o", out, "-q"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "<img" not in text and "<b>b</b>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "&lt;b&gt;b&lt;/b&gt;" in text
