"""Routing health (formats/scores.md *Routing health*): moe-score's per-expert shares and per-layer flags on a
synthetic trace with one planted collapsed layer, and the same panel and badges in moe-report."""

from __future__ import annotations

import json
import math

import numpy as np

from moetools.cli.score import command as moe_score
from moetools.report import build_report
from moetools.report.page import read_data_block
from moetools.score.health import THRESHOLDS, expert_health
from tests.trace_factory import make_records, write_trace


def collapsed_trace(path, tokens: int = 150):
    """2 layers (0, 2) x 8 experts, K = 2; layer 2 routes every token to experts 0 and 1."""
    records = make_records(documents=8, tokens=tokens)
    for record in records:
        record["experts"][1, :, 0], record["experts"][1, :, 1] = 0, 1
    path.write_bytes(write_trace(records))
    return records


def score_lines(run_tool, args):
    result = run_tool(moe_score, [str(a) for a in args] + ["-q"])
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_moe_score_flags_the_planted_collapsed_layer_and_only_it(tmp_path, run_tool):
    records = collapsed_trace(tmp_path / "t.msgpack.zst")
    lines = score_lines(run_tool, [tmp_path / "t.msgpack.zst", "--permutations", "0"])
    health = lines[-1]["summary"]["health"]
    assert health["thresholds"] == THRESHOLDS and health["tokens"] == 8 * 150 and health["top_k"] == 2
    collapsed, healthy = health["layers"]["2"], health["layers"]["0"]
    assert collapsed == {"entropy": 1.0, "entropy_norm": round(1 / 3, 4), "max_share": 0.5, "max_expert": 0,
                         "dead": [2, 3, 4, 5, 6, 7], "always_on": [0, 1], "collapsed": True}
    assert not healthy["collapsed"] and healthy["dead"] == [] and healthy["always_on"] == []
    # the per-expert shares are the trace's counts: recomputed here from the records
    counts = np.zeros(8)
    for record in records:
        np.add.at(counts, record["experts"][0].ravel().astype(int), 1)
    experts = {(r["layer"], r["expert"]): r["health"] for r in lines if r.get("type") == "expert"}
    for e in range(8):
        assert math.isclose(experts[(0, e)]["share"], counts[e] / (2 * 1200), rel_tol=1e-5)
        assert math.isclose(experts[(0, e)]["tokens"], counts[e] / 1200, rel_tol=1e-5)
    assert experts[(2, 0)] == {"share": 0.5, "tokens": 1.0, "dead": False, "always_on": True}
    assert experts[(2, 5)] == {"share": 0.0, "tokens": 0.0, "dead": True, "always_on": False}
    assert math.isclose(healthy["entropy"], -sum(p * math.log2(p) for p in counts / counts.sum() if p), abs_tol=1e-4)
    assert "health" in lines[0]["metrics"]


def test_dead_is_not_judged_on_too_few_tokens_nor_always_on_where_k_is_over_half_of_e():
    few = expert_health(np.array([[2.0, 0.0, 2.0, 2.0]]), tokens=2, top_k=3)   # T·K/E = 1.5 < 10
    assert np.isnan(few["dead"]).all() and np.isnan(few["always_on"]).all()      # K/E = 0.75: not judged
    many = expert_health(np.array([[1000.0, 995.0, 3.0, 2.0] + [0.0] * 4]), tokens=1000, top_k=2)
    assert list(many["dead"][0]) == [0, 0, 0, 1, 1, 1, 1, 1]   # 1% of the 250 expected: 2 is dead, 3 not
    assert list(many["always_on"][0]) == [1, 1, 0, 0, 0, 0, 0, 0]


def test_metrics_health_alone_writes_only_health(tmp_path, run_tool):
    collapsed_trace(tmp_path / "t.msgpack.zst", tokens=40)
    lines = score_lines(run_tool, [tmp_path / "t.msgpack.zst", "--metrics", "health", "--permutations", "0"])
    assert set(lines[0]["metrics"]) == {"health"}
    expert = next(r for r in lines if r.get("type") == "expert")
    assert set(expert) == {"type", "layer", "expert", "domains", "health"}


def test_report_panel_and_badges_from_scores_and_from_the_trace_alone(tmp_path, run_tool):
    collapsed_trace(tmp_path / "t.msgpack.zst")
    result = run_tool(moe_score, [str(tmp_path / "t.msgpack.zst"), "--permutations", "0", "-q",
                                  "-o", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 0, result.stderr
    for inputs in ([tmp_path / "t.msgpack.zst"], [tmp_path / "s.jsonl"]):
        out = tmp_path / "r.html"
        build_report(inputs, out)
        text = out.read_text()
        data = read_data_block(text)
        assert data["health"]["layers"]["2"]["collapsed"] and not data["health"]["layers"]["0"]["collapsed"]
        assert "<li>layer 2: collapsed (normalised load entropy 0.3333), 6 dead, 2 always-on</li>" in text
        flags = {(x["l"], x["e"]): x.get("hf") for x in data["experts"]}
        assert flags[(2, 0)] == ["always-on", "collapsed layer"] and flags[(2, 7)] == ["dead", "collapsed layer"]
        assert all(flags[(0, e)] is None for e in range(8))


def test_the_document_view_is_bounded_and_a_missing_document_is_refused(tmp_path):
    from click.testing import CliRunner

    from moetools.cli import load_command

    records = collapsed_trace(tmp_path / "t.msgpack.zst")
    out = tmp_path / "r.html"
    build_report([tmp_path / "t.msgpack.zst"], out)
    docs = read_data_block(out.read_text())["docs"]
    assert [d["id"] for d in docs] == [f"doc{i}" for i in range(8)]
    result = CliRunner().invoke(load_command("moe-report"), [str(tmp_path / "t.msgpack.zst"), "--document", "doc5",
                                                           "--document", "doc2", "--document-tokens", "70",
                                                           "-o", str(out), "--force"])
    assert result.exit_code == 0, result.output
    data = read_data_block(out.read_text())
    assert [d["id"] for d in data["docs"]] == ["doc5", "doc2"] and data["doc_rows"] == ["0", "2"]
    doc5 = [r for r in records if r["doc_id"] == "doc5"]          # windows of 64 tokens: 64 + 6 of the second
    assert len(data["docs"][0]["p"]) == 70 and data["docs"][0]["p"] == (doc5[0]["pieces"] + doc5[1]["pieces"])[:70]
    assert data["docs"][0]["x"][0] == [int(e) for r in doc5 for e in r["experts"][0].ravel()][:140]
    refused = CliRunner().invoke(load_command("moe-report"), [str(tmp_path / "t.msgpack.zst"), "--document", "nope",
                                                            "-o", str(tmp_path / "x.html")])
    assert refused.exit_code == 2 and "no document 'nope' in the trace" in refused.output
    assert not (tmp_path / "x.html").exists()
