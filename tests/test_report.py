"""moe-report without a browser: inputs in any order and any subset, one model only, a self-contained page,
bounded per-expert data (the browser test is tests/test_report_browser.py)."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from report_fixture import build_inputs
from trace_factory import make_records, write_trace

from moetools.cli import load_command
from moetools.report import ReportOptions, build_report
from moetools.report.page import read_data_block


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return build_inputs(tmp_path_factory.mktemp("report"))


def page_data(path) -> dict:
    """The page's inline JSON (formats/report.md)."""
    return read_data_block(path.read_text(encoding="utf-8"))


def report(args, tmp_path, name="report.html"):
    out = tmp_path / name
    result = CliRunner().invoke(load_command("moe-report"), [*map(str, args), "-o", str(out)])
    return result, out


def test_every_input_in_any_order_gives_the_same_cards(inputs, tmp_path):
    forward, out_a = report(list(inputs.values()), tmp_path, "a.html")
    backward, out_b = report(list(reversed(inputs.values())), tmp_path, "b.html")
    assert forward.exit_code == 0 and backward.exit_code == 0, forward.output + backward.output
    a, b = page_data(out_a), page_data(out_b)
    assert len(a["experts"]) == 16 and a["experts"] == b["experts"] and a["keys"] == b["keys"]
    assert {s["kind"] for s in a["sources"]} == {"trace", "samples", "labels", "scores", "experts", "eval"}
    card = next(e for e in a["experts"] if e.get("c"))
    assert card["lab"].startswith("This expert specializes in") and card["by"].startswith("offline")
    assert len(card["v"]) == len(a["keys"]) and "das:code" in a["keys"] and "skew.ratio" in a["keys"]
    assert len(card["h"]) == len(a["domains"]) == 2
    assert card["ll"] and card["ho"] and {h["pos"] for h in card["ho"]} == {0, 1}
    chosen = json.loads(inputs["experts"].read_text())["experts"]
    members = {(e["l"], e["e"]) for e in a["experts"] if e.get("sets") == [0]}
    assert members == {(int(layer), expert) for layer, ids in chosen.items() for expert in ids}
    html = out_a.read_text()
    assert html.count("<svg") >= 4  # das, af, skew heatmaps, concentration, skewed-experts bars
    assert "Evaluation (moe-eval)" in html and "(+0.300)" in html and "Selected expert sets" in html


@pytest.mark.parametrize("subset", [("labels",), ("trace",), ("scores", "experts"), ("samples", "eval")])
def test_any_subset(inputs, tmp_path, subset):
    result, out = report([inputs[name] for name in subset], tmp_path)
    assert result.exit_code == 0, result.output
    data = page_data(out)
    assert len(data["experts"]) == 16  # the trace and scores list every expert; samples and labels too here


def test_the_page_refers_to_nothing_outside_it(inputs, tmp_path):
    _, out = report(list(inputs.values()), tmp_path)
    html = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "<link" not in html and "@import" not in html
    assert not re.search(r"url\((?!#)", html)  # only the SVGs' references to their own clip paths
    assert "default-src 'none'" in html  # the page's CSP forbids any fetch even if something slipped in


def test_label_text_cannot_break_out_of_the_data_block(inputs, tmp_path):
    labels = tmp_path / "labels.jsonl"
    lines = inputs["labels"].read_text().splitlines()
    record = json.loads(lines[1])
    record["explanation"] = "This expert specializes in </script><script>alert(1)</script> & <b>"
    lines[1] = json.dumps(record)
    labels.write_text("\n".join(lines) + "\n")
    result, out = report([labels], tmp_path)
    assert result.exit_code == 0, result.output
    assert "alert(1)</script>" not in out.read_text()
    assert page_data(out)["experts"][0]["lab"].endswith("</script><script>alert(1)</script> & <b>")


def test_streams_of_two_models_are_refused(inputs, tmp_path):
    mixed = tmp_path / "labels-other.jsonl"
    lines = inputs["labels"].read_text().splitlines()
    header = json.loads(lines[0])
    header["model"] = dict(header["model"], fingerprint="sha256:" + "b2" * 32, name="other")
    mixed.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    result, out = report([inputs["scores"], mixed], tmp_path)
    assert result.exit_code == 2 and "another model" in result.output and not out.exists()


def test_eval_of_another_model_is_refused(inputs, tmp_path):
    from report_fixture import write_eval

    stranger = tmp_path / "eval.jsonl"
    write_eval(stranger, "sha256:" + "c3" * 32)
    result, _ = report([inputs["labels"], stranger], tmp_path)
    assert result.exit_code == 2 and "none of the evaluated models" in result.output


def test_other_stream_kinds_and_no_input_are_usage_errors(tmp_path):
    from conftest import stream_bytes

    odd = tmp_path / "odd.msgpack.zst"
    odd.write_bytes(stream_bytes([{"type": "thing"}], kind="mystery"))
    result, _ = report([odd], tmp_path)
    assert result.exit_code == 2 and "not a mystery stream" in result.output
    result = CliRunner().invoke(load_command("moe-report"), ["-o", str(tmp_path / "x.html")])
    assert result.exit_code == 2 and "no input" in result.output


def test_large_data_is_gzipped_and_reads_back_the_same(inputs, tmp_path):
    plain, packed = tmp_path / "plain.html", tmp_path / "packed.html"
    build_report([inputs["samples"], inputs["labels"]], plain, compress=False)
    build_report([inputs["samples"], inputs["labels"]], packed, compress=True)
    assert 'data-encoding="gzip+base64"' in packed.read_text() and 'data-encoding="gzip' not in plain.read_text()
    assert page_data(plain) == page_data(packed)
    assert packed.stat().st_size < plain.stat().st_size


def test_activations_are_percent_of_the_experts_largest(inputs, tmp_path):
    out = tmp_path / "report.html"
    build_report([inputs["samples"]], out)
    for expert in page_data(out)["experts"]:
        values = [a for context in expert.get("c", []) + expert.get("ho", []) for a in context["a"]]
        if values:
            assert all(isinstance(a, int) and 0 <= a <= 100 for a in values) and max(values) == 100
            assert expert["as"] > 0
        for context in expert.get("c", []):
            assert context["a"][context["m"]] > 0  # the marked token of a top context is routed


def test_contexts_are_clipped_around_the_marked_token(inputs, tmp_path):
    out = tmp_path / "small.html"
    build_report([inputs["samples"]], out, options=ReportOptions(contexts=1, holdout=0, context_tokens=5))
    for expert in page_data(out)["experts"]:
        for context in expert.get("c", []):
            assert len(context["p"]) == len(context["a"]) <= 5 and 0 <= context["m"] < len(context["p"])
        assert len(expert.get("c", [])) <= 1 and "ho" not in expert


def test_baseline_trace_is_drawn_beside_the_model(inputs, tmp_path):
    baseline = tmp_path / "random.trace.msgpack.zst"
    baseline.write_bytes(write_trace(make_records(documents=8, tokens=150, seed=5)))
    result, out = report([inputs["trace"], "--baseline", baseline], tmp_path)
    assert result.exit_code == 0, result.output
    assert "baseline: own" in out.read_text()
