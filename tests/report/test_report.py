"""moe-report without a browser: inputs in any order and any subset, one model only, a self-contained page,
bounded per-expert data (the browser test is tests/report/test_browser.py)."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from moetools.cli import load_command
from moetools.report import ReportOptions, build_report
from moetools.report.page import read_data_block
from tests.report_fixture import build_inputs
from tests.trace_factory import make_records, write_trace


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
    card = next(e for e in a["experts"] if e.get("c") and not e.get("more"))
    assert card["lab"].startswith("This expert specializes in") and card["by"].startswith("offline")
    assert len(card["v"]) == len(a["keys"]) and "das:code" in a["keys"] and "skew.ratio" in a["keys"]
    assert len(card["h"]) == len(a["domains"]) == 2
    assert card["ll"] and card["ho"] and {h["pos"] for h in card["ho"]} == {0, 1}
    chosen = json.loads(inputs["experts"].read_text())["experts"]
    members = {(e["l"], e["e"]) for e in a["experts"] if e.get("sets") == [0]}
    assert members == {(int(layer), expert) for layer, ids in chosen.items() for expert in ids}
    html = out_a.read_text()
    assert html.count("<svg") >= 1  # the concentration bars; the maps are drawn by the page
    maps = {spec["title"]: spec for spec in a["maps"]}
    assert maps["das"]["keys"] == [["code", "das:code"], ["legal", "das:legal"]] and maps["das"]["div"]
    assert {"af", "ems", "f1"} <= set(maps) and a["rows"] == ["0", "2"] and a["map_layers"] == [0, 2]
    assert all(key in a["keys"] for spec in a["maps"] for _, key in spec["keys"])
    assert "Evaluation (moe-eval)" in html and "(+0.300 [+0.200, +0.400])" in html and "Selected expert sets" in html
    # every expert id of the sets table and of the eval table's masked experts is a link to its card
    links = [f'<a class=eid href="#{layer}/{e}">{e}</a>' for layer, ids in chosen.items() for e in ids]
    sets_table = html[html.index("<table class=sets>"):html.index("</table>", html.index("<table class=sets>"))]
    eval_table = html[html.index("<table class=eval>"):html.index("</table>", html.index("<table class=eval>"))]
    assert all(link in sets_table and link in eval_table for link in links)
    assert "<tr><th>masked experts</th><td></td><td class=masked" in eval_table


def test_two_labels_streams_show_both_labels_the_llm_first(inputs, tmp_path):
    result, out = report([inputs["labels"], inputs["llm_labels"], inputs["scores"]], tmp_path)
    assert result.exit_code == 0, result.output
    experts = {(e["l"], e["e"]): e for e in page_data(out)["experts"]}
    chosen = json.loads(inputs["experts"].read_text())["experts"]
    llm = {(int(layer), expert) for layer, ids in chosen.items() for expert in ids}   # the LLM labelled these
    for key, expert in experts.items():
        if key in llm:
            assert expert["by"] == "openai (stub-model)" and "offline-log-odds" not in expert["lab"]
            assert [m["by"].split(" ")[0] for m in expert["more"]] == ["offline"]
            assert expert["more"][0]["lab"].startswith("This expert specializes in the tokens")
        else:
            assert expert["by"].startswith("offline") and "more" not in expert
    # the order the streams are given in does not matter
    _, again = report([inputs["llm_labels"], inputs["scores"], inputs["labels"]], tmp_path, "again.html")
    assert page_data(again)["experts"] == page_data(out)["experts"]


def holdout_of(path) -> dict:
    from moetools.streams.files import read_input

    return {(r["layer"], r["expert"]): r["holdout"] for r in read_input(str(path), kinds="samples")
            if r.get("type") == "expert"}


def test_holdout_examples_carry_the_scorers_verdicts_mistakes_first(inputs, tmp_path):
    result, out = report([inputs["samples"], inputs["scores"]], tmp_path)
    assert result.exit_code == 0, result.output
    data = page_data(out)
    assert data["scorer"] == "LLM scorer openai (stub-scorer), prompt paper 000 appendix A.2"
    assert data["verdicts_unmatched"] == 0
    scores = {(r["layer"], r["expert"]): r for r in read_input_records(inputs["scores"]) if r["type"] == "expert"}
    holdout = holdout_of(inputs["samples"])
    wrong_seen = 0
    for expert in data["experts"]:
        key = (expert["l"], expert["e"])
        verdicts = scores[key]["judged"]["mono"]["verdicts"]
        prompt, scorer, threshold, rows, label_by = expert["jv"][0]
        assert (prompt, scorer, threshold, label_by) == ("mono", "llm", None, "offline")
        assert len(rows) == len(verdicts)
        for row, verdict in zip(rows, verdicts):      # [y, index, repeats saying 1, repeats answered]
            assert row == [verdict["y"], verdict["index"], sum(verdict["yhat"]), 2]
        for side, truth in (("positive", 1), ("negative", 0)):
            shown = [c for c in expert["ho"] if c["pos"] == truth]
            assert len(shown) == 2
            for context in shown:                     # the very context the verdict names, clipped
                source = holdout[key][side][context["i"]]
                assert context["p"] == source["pieces"][:len(context["p"])] or \
                    "".join(context["p"]) in "".join(source["pieces"])
                verdict = next(v for v in verdicts if v["holdout"] == side and v["index"] == context["i"])
                assert context["j"] == [sum(verdict["yhat"]), 2]
            wrong = [v for v in verdicts if v["holdout"] == side and sum(v["yhat"]) == 2 * (1 - truth)]
            if wrong:                                 # a sample both repeats got wrong is shown first
                assert shown[0]["j"][0] == 2 * (1 - truth)
                wrong_seen += 1
    assert wrong_seen > 0


def read_input_records(path):
    from moetools.streams.files import read_input

    return list(read_input(str(path), kinds="scores"))


def test_embedding_verdicts_show_the_similarity_and_the_cut_off(inputs, tmp_path):
    """The offline scorer's verdicts: one answer each, with the similarity and the fitted cut-off."""
    lines = []
    for line in inputs["scores"].read_text().splitlines():
        record = json.loads(line)
        if record.get("type") == "header":
            record["scorer"] = {"kind": "embedding", "model": "all-MiniLM-L6-v2", "backend": "embedding",
                                "method": "cosine similarity"}
        mono = (record.get("judged") or {}).get("mono")
        if mono:
            mono.update(scorer="embedding", repeats=1, threshold=0.25)
            for k, verdict in enumerate(mono["verdicts"]):
                verdict["sim"] = round(0.05 * k, 4)
                verdict["yhat"] = [int(verdict["sim"] >= 0.25)]
        lines.append(json.dumps(record))
    scores = tmp_path / "embedding.scores.jsonl"
    scores.write_text("\n".join(lines) + "\n")
    result, out = report([inputs["samples"], scores], tmp_path)
    assert result.exit_code == 0, result.output
    data = page_data(out)
    assert data["scorer"].startswith("embedding scorer (all-MiniLM-L6-v2)")
    for expert in data["experts"]:
        assert expert["jv"][0][1:3] == ["embedding", 0.25]
        for context in expert["ho"]:
            assert context["j"][1] == 1 and context["j"][0] == int(context["s"] >= 0.25)


def test_verdicts_about_other_contexts_are_not_shown(inputs, tmp_path):
    """A scores stream judged on another samples stream: ids disagree, the verdicts are counted and left out."""
    lines = inputs["scores"].read_text().splitlines()
    changed = []
    for line in lines:
        record = json.loads(line)
        for verdict in ((record.get("judged") or {}).get("mono") or {}).get("verdicts") or []:
            verdict["id"] = "elsewhere-" + verdict["id"]
        changed.append(json.dumps(record))
    other = tmp_path / "other.scores.jsonl"
    other.write_text("\n".join(changed) + "\n")
    result, out = report([other, inputs["samples"]], tmp_path)
    assert result.exit_code == 0, result.output
    data = page_data(out)
    assert data["verdicts_unmatched"] > 0
    assert all("j" not in c for e in data["experts"] for c in e.get("ho", []))


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
    from tests.report_fixture import write_eval

    stranger = tmp_path / "eval.jsonl"
    write_eval(stranger, "sha256:" + "c3" * 32)
    result, _ = report([inputs["labels"], stranger], tmp_path)
    assert result.exit_code == 2 and "none of the evaluated models" in result.output


def test_other_stream_kinds_and_no_input_are_usage_errors(tmp_path):
    from tests.conftest import stream_bytes

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
