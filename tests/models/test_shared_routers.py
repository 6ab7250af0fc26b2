"""Layers that share one router count once: a real tiny MONET-VD with moe_groups = 4 over 4 layers.

MONET reuses one layer's routing in the next moe_groups − 1 layers [004 App. B.1], so the four
layers of the demo's MONET-VD route every token alike: one router, 256 composed experts, not
4 × 256. The trace header says which layers share a router; moe-score writes one record per
router (Benjamini-Hochberg over 256 p-values); moe-select picks per router; moe-mask and moe-tune
apply a router's expert to every layer of its group and say so; moe-report and the demo summary
name the layers that share it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from moetools.cli.mask import command as moe_mask
from moetools.cli.report import command as moe_report
from moetools.cli.score import command as moe_score
from moetools.cli.select import command as moe_select
from moetools.cli.trace import command as moe_trace
from moetools.cli.tune import command as moe_tune
from moetools.report.page import read_data_block
from moetools.score.metrics import benjamini_hochberg
from moetools.streams import StreamReader
from tests.tiny_models import save_tiny_monet

WORDS = ["the", "court", "law", "contract", "party", "def", "return", "import", "class", "value", "patient", "dose"]
TEXTS = {"law": "the court law contract party the law court contract party",
         "code": "def return import class value def value return class import"}
LAYERS, EXPERTS = 4, 16 ** 2


def run(command, args, input=None):
    return CliRunner().invoke(command, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture(scope="module")
def monet(tmp_path_factory):
    """(folder, model dir, trace path, scores path): the demo's MONET-VD shape (16² experts,
    moe_groups = 4 over 4 layers), random weights, traced over a two-domain corpus and scored."""
    folder = tmp_path_factory.mktemp("shared")
    model = save_tiny_monet(folder / "monet-vd", WORDS, layers=LAYERS, moe_experts=16, groups=4)
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"{domain}-{i}", "domain": domain,
                                          "text": " ".join(text.split()[i:] + text.split()[:i])}) + "\n"
                              for i in range(6) for domain, text in TEXTS.items()))
    trace = folder / "trace.msgpack.zst"
    result = run(moe_trace, [model, corpus, "-o", trace, "-q", "--precision", "24", "--logit-lens", "1"])
    assert result.exit_code == 0, result.output
    scores = folder / "scores.jsonl"
    result = run(moe_score, [trace, "--permutations", "50", "-q", "-o", scores])
    assert result.exit_code == 0, result.output
    return folder, model, trace, scores


def read(path):
    with open(path, "rb") as handle:
        reader = StreamReader(handle)
        records = list(reader)
    return reader.header, records, reader.ends[-1]


def test_the_trace_header_says_which_layers_share_a_router_and_they_route_alike(monet):
    _, _, trace, _ = monet
    header, records, _ = read(trace)
    assert header["model"]["shared_routers"] == [[0, 1, 2, 3]] and header["layers"] == [0, 1, 2, 3]
    for record in records:
        for layer in range(1, LAYERS):
            assert np.array_equal(record["experts"][layer], record["experts"][0])
            assert np.array_equal(record["gates"][layer], record["gates"][0])
        assert not np.allclose(record["contribution"][1], record["contribution"][0])   # own expert weights


def test_moe_score_counts_each_router_once(monet):
    _, _, trace, scores = monet
    _, sequences, _ = read(trace)
    header, records, end = read(scores)
    experts = [r for r in records if r["type"] == "expert"]
    assert header["layers"] == [0] and header["num_experts"] == EXPERTS
    assert header["shared_routers"] == [[0, 1, 2, 3]]
    assert len(experts) == EXPERTS, "one record per composed expert of the one router, not 4 x 256"
    assert {r["layer"] for r in experts} == {0} and all(r["shared_layers"] == [0, 1, 2, 3] for r in experts)
    # Benjamini-Hochberg over the router's 256 p-values (not over four copies of each)
    p = np.array([r["skew"]["p"] for r in experts], dtype=float)
    q = np.array([r["skew"]["q"] for r in experts], dtype=float)
    np.testing.assert_allclose(q, benjamini_hochberg(p), atol=1e-12)
    assert list(end["summary"]["skew"]["specialised"]) == ["0"]
    # routing metrics from the router's layer; expert-output metrics summed over the group's layers
    for domain in TEXTS:
        seqs = [s for s in sequences if s["meta"]["domain"] == domain]
        tokens = sum(len(s["tokens"]) for s in seqs)
        routed = np.zeros(EXPERTS)
        written = np.zeros(EXPERTS)
        for s in seqs:
            np.add.at(routed, s["experts"][0][s["gates"][0] > 0].astype(int), 1)
            for layer in range(LAYERS):
                live = s["gates"][layer] > 0
                np.add.at(written, s["experts"][layer][live].astype(int), s["contribution"][layer][live])
        by_id = {r["expert"]: r["domains"][domain] for r in experts}
        np.testing.assert_allclose([by_id[e]["af"] for e in range(EXPERTS)], routed / tokens, atol=1e-12)
        np.testing.assert_allclose([by_id[e]["psn"] for e in range(EXPERTS)], written / tokens, rtol=1e-5, atol=1e-9)


def test_moe_select_picks_per_router_and_mask_and_tune_apply_it_to_every_layer_of_the_group(monet):
    folder, model, _, scores = monet
    result = run(moe_select, [scores, "--by", "af", "--domain", "law", "--top", "3"])
    assert result.exit_code == 0, result.output
    chosen = json.loads(result.stdout)["experts"]
    assert list(chosen) == ["0"] and len(chosen["0"]) == 3
    experts = folder / "law.json"
    experts.write_text(result.stdout)
    result = run(moe_mask, [model, "--experts", experts, "-o", folder / "masked"])
    assert result.exit_code == 0, result.output
    assert "note: layers 0-3 share one router: masking a composed expert of a shared router acts on every " \
           "layer of its group" in result.stderr
    record = json.loads((folder / "masked" / "moe_mask.json").read_text())
    assert {layer: entry["masked"] for layer, entry in record["layers"].items()} == \
        {str(layer): sorted(chosen["0"]) for layer in range(LAYERS)}
    data = folder / "law.jsonl"
    data.write_text("".join(json.dumps({"text": TEXTS["law"], "domain": "law"}) + "\n" for _ in range(4)))
    result = run(moe_tune, [model, "--data", data, "--experts", experts, "-o", folder / "tuned", "--steps", "1",
                            "--batch-size", "2", "--seq-len", "8"])
    assert result.exit_code == 0, result.output
    assert "note: layers 0-3 share one router: tuning a composed expert of a shared router acts on every " \
           "layer of its group" in result.stderr
    tuned = json.loads((folder / "tuned" / "experts.json").read_text())["experts"]
    assert {layer: sorted(ids) for layer, ids in tuned.items()} == \
        {str(layer): sorted(chosen["0"]) for layer in range(LAYERS)}


def test_moe_report_draws_one_row_per_router_and_names_the_layers_sharing_it(monet):
    folder, _, trace, scores = monet
    page = folder / "report.html"
    result = run(moe_report, [trace, scores, "-o", page])
    assert result.exit_code == 0, result.output
    html = page.read_text(encoding="utf-8")
    assert "layers 0-3 share one router: one row per router" in html
    payload = read_data_block(html)
    assert payload["layers"] == [0] and {entry["l"] for entry in payload["experts"]} == {0}
    # the maps, the routing health and the document view have one row per router too
    assert payload["rows"] == ["0-3"] and payload["map_layers"] == [0] and payload["maps"]
    assert list(payload["health"]["layers"]) == ["0"] and payload["health"]["source"] == "scores"
    assert payload["doc_rows"] == ["0-3"] and all(len(doc["x"]) == 1 for doc in payload["docs"])
    assert "<tr class='ok' data-layer='0'><th>0-3</th>" in html or "data-layer='0'><th>0-3</th>" in html


def test_the_demo_summary_says_the_layers_share_one_router(monet):
    from moetools.demo.chain import skew_significance_lines
    from moetools.score.specialisation import routing_from_stream, specialisation_report

    _, _, trace, scores = monet
    with open(trace, "rb") as handle:
        routing, _ = routing_from_stream(handle)
    report = specialisation_report(routing, k=2)
    assert (report["layers"], report["experts_per_layer"], report["skewed_experts"]["experts"]) == (1, 256, 256)
    line = skew_significance_lines(scores, scores)[0]
    assert "over 1 router x 256 experts (layers 0-3 share one router: each router counted once)" in line


def test_a_trace_whose_shared_layers_route_differently_is_refused(make_stream, tmp_path):
    from tests.trace_factory import MODEL, header_extra, make_records

    model = dict(MODEL, shared_routers=[[0, 2]])        # says layers 0 and 2 share a router; they do not
    trace = tmp_path / "liar.msgpack.zst"
    trace.write_bytes(make_stream(make_records(documents=2, tokens=8), model=model, header_extra=header_extra()))
    result = CliRunner().invoke(moe_score, [str(trace), "-q"])
    assert result.exit_code == 2
    assert "layers 0 and 2 are said to share one router (model.shared_routers) but route differently" in result.stderr
