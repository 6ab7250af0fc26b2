"""moe-score and moe-select on real traces of a tiny OLMoE (moe-trace's own output), bad input, examples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moetools.cli.score import command as moe_score
from moetools.cli.select import command as moe_select
from moetools.errors import FormatError, ModelMismatchError
from moetools.select import read_experts
from moetools.streams import StreamReader
from moetools.streams.files import read_input

EXAMPLES = Path(__file__).resolve().parents[2] / "formats" / "examples"
WORDS = ["def", "return", "import", "class", "self", "value", "court", "law", "contract", "party", "clause",
         "patient", "dose", "fever", "blood", "heart", "the", "a", "of", "and", "is"]
TEXTS = {"code": "def value return self import class value self def return",
         "legal": "the court law contract party clause the party law court",
         "medical": "patient dose fever blood heart the patient fever dose blood"}


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """Two real traces through moe-trace: a three-domain corpus with toxicity, and the same corpus
    through a second random checkpoint (for RC)."""
    from click.testing import CliRunner

    from moetools.cli.trace import command as moe_trace
    from tests.tiny_models import save_tiny_olmoe

    folder = tmp_path_factory.mktemp("real")
    corpus = folder / "corpus.jsonl"
    rows = []
    for i in range(4):
        for n, (domain, text) in enumerate(TEXTS.items()):
            words = text.split()
            rows.append({"id": f"{domain}-{i}", "text": " ".join(words[i:] + words[:i]), "domain": domain,
                         "toxicity": (i + n) / 10})
    rows.append({"id": "nodomain", "text": "the law of the heart", "toxicity": 0.5})
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    traces = {}
    for name, seed, extra in (("after", 0, []), ("before", 1, []), ("lens", 0, ["--logit-lens", "2"])):
        if not (folder / ("after" if name == "lens" else name)).exists():
            save_tiny_olmoe(folder / name, WORDS, seed=seed)
        model = folder / ("after" if name == "lens" else name)
        out = folder / f"{name}.msgpack.zst"
        result = CliRunner().invoke(moe_trace, [str(model), str(corpus), "-o", str(out), "-q",
                                                "--precision", "24", "--max-length", "8", *extra])
        assert result.exit_code == 0, result.output
        traces[name] = out
    return folder, traces


def scores_of(run_tool, args):
    result = run_tool(moe_score, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    return lines[0], [r for r in lines if r["type"] == "expert"], lines[-1]


def test_real_trace_metrics_agree_with_the_trace_itself(traced, run_tool):
    _, traces = traced
    header, records, end = scores_of(run_tool, [traces["after"], "--target-field", "toxicity",
                                                "--permutations", "200"])
    reader = read_input(traces["after"], kinds="trace")
    sequences = [r for r in reader if r.get("meta", {}).get("domain")]
    K, E, layers = reader.header["top_k"], reader.header["num_experts"], reader.header["layers"]
    assert header["model"] == reader.header["model"] and header["layers"] == layers
    by_key = {(r["layer"], r["expert"]): r for r in records}
    assert len(by_key) == len(layers) * E
    for domain in TEXTS:
        seqs = [s for s in sequences if s["meta"]["domain"] == domain]
        tokens = sum(len(s["tokens"]) for s in seqs)
        assert end["summary"]["tokens"][domain] == tokens
        for li, layer in enumerate(layers):
            counts = np.zeros(E)
            prob = np.zeros(E)
            for s in seqs:                       # brute force over the real arrays, token by token
                for t in range(len(s["tokens"])):
                    for e in s["experts"][li, t]:
                        counts[int(e)] += 1
                prob += s["prob_sum"][li]
            values = [by_key[(layer, e)]["domains"][domain] for e in range(E)]
            np.testing.assert_allclose([v["af"] for v in values], counts / tokens, atol=1e-9)
            np.testing.assert_allclose([v["prob"] for v in values], prob / tokens, rtol=1e-6)
            assert sum(v["af"] for v in values) == pytest.approx(K)           # K distinct experts per token
            assert sum(v["prob"] for v in values) == pytest.approx(1, abs=1e-5)
            assert sum(v["das"] for v in values) == pytest.approx(0, abs=1e-5)
            np.testing.assert_allclose([v["esft_token"] for v in values], counts / tokens / K, atol=1e-9)
            np.testing.assert_allclose([v["esft_gate"] for v in values], [v["score"] for v in values])
            for v in values:
                if v["routed"]:
                    assert v["reap"] * v["routed"] == pytest.approx(v["psn"] * tokens)
    assert end["summary"]["missing_domain"] == {"documents": 1, "sequences": 1, "tokens": 5}
    skew = end["summary"]["skew"]
    assert skew["permutations"] == 200 and not skew["exact"]
    assert all(0 < r["skew"]["p"] <= 1 and r["skew"]["p"] <= r["skew"]["q"] + 1e-12 for r in records)
    assert all(-1 <= r["pearson"] <= 1 for r in records if r["pearson"] is not None)
    # the 2x count agrees with moetools.score.specialisation (the demo's figure) on the same trace
    from moetools.score.specialisation import routing_from_stream, skewed_experts

    with open(traces["after"], "rb") as handle:
        routing, _ = routing_from_stream(handle)
    for ratio in (1.2, 2.0):
        _, _, end_again = scores_of(run_tool, [traces["after"], "--permutations", "0", "--min-ratio", ratio])
        assert end_again["summary"]["skew"]["specialised_total"] == skewed_experts(routing, ratio)["total"]


def test_concatenated_shards_score_like_one_trace_and_rc_against_itself_is_zero(traced, run_tool, tmp_path):
    _, traces = traced
    both = tmp_path / "twice.msgpack.zst"
    both.write_bytes(traces["after"].read_bytes() * 2)
    _, once, _ = scores_of(run_tool, [traces["after"], "--permutations", "0"])
    _, twice, _ = scores_of(run_tool, [both, "--permutations", "0"])
    for a, b in zip(once, twice):
        for domain in TEXTS:
            for name in ("af", "das", "prob", "esft_gate"):
                assert a["domains"][domain][name] == pytest.approx(b["domains"][domain][name], abs=1e-12)
    _, records, end = scores_of(run_tool, [traces["after"], "--rc-against", traces["after"], "--metrics", "rc_shift"])
    assert end["summary"]["rc"] == 0 and all(r["rc_shift"] == 0 for r in records)
    _, records, end = scores_of(run_tool, [traces["after"], "--rc-against", traces["before"], "--metrics", "rc_shift"])
    assert end["summary"]["rc"] > 0


def test_select_from_real_scores_and_apply_to_models(traced, run_tool, tmp_path):
    _, traces = traced
    scores = tmp_path / "routing.scores.jsonl"
    assert run_tool(moe_score, [str(traces["after"]), "-o", str(scores), "-q"]).exit_code == 0
    out = tmp_path / "code.json"
    result = run_tool(moe_select, [str(scores), "--by", "das", "--domain", "code", "--top", "2", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    header = read_input(traces["after"], kinds="trace").header
    assert set(data["experts"]) == {str(layer) for layer in header["layers"]}
    assert all(len(ids) == 2 for ids in data["experts"].values())
    assert data["moetools"]["model"] == header["model"] and data["moetools"]["criterion"]["by"] == "das"
    records = [r for r in read_input(scores, kinds="scores") if r["type"] == "expert"]
    for layer, ids in data["experts"].items():
        das = {r["expert"]: r["domains"]["code"]["das"] for r in records if r["layer"] == int(layer)}
        assert ids == sorted(das, key=lambda e: -das[e])[:2]
        assert data["moetools"]["scores"][layer] == {str(e): das[e] for e in ids}
    chosen = read_experts(out, model=header["model"])
    other = read_input(traces["before"], kinds="trace").header["model"]
    with pytest.raises(ModelMismatchError, match="refusing to apply"):
        read_experts(out, model=other)
    assert len(chosen) == 2 * len(header["layers"])
    # the control: --random is seeded, per layer, within range
    first = run_tool(moe_select, [str(scores), "--random", "3", "--seed", "5"]).stdout
    assert first == run_tool(moe_select, [str(scores), "--random", "3", "--seed", "5"]).stdout
    assert all(len(v) == 3 and max(v) < 8 for v in json.loads(first)["experts"].values())
    # skew and pearson criteria run on real scores
    for args in (["--by", "skew", "--domain", "legal", "--min-ratio", "1.2"], ["--min-ratio", "1.2", "--domain", "code",
                                                                                 "--max-q", "1"]):
        result = run_tool(moe_select, [str(scores), *args])
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["moetools"]["criterion"]["by"] == "skew"


def esft_generate(scores: dict, top_p: float) -> dict:
    """deepseek-ai/ESFT scripts/generate_expert_config.py, the selection loop as published."""
    experts = {}
    for layer, l_score in scores.items():
        l_score = [(int(k), v) for k, v in l_score.items()]
        l_score = sorted(l_score, key=lambda x: x[1], reverse=True)
        selected_experts, current_score = [], 0
        for expert, score in l_score:
            if current_score >= top_p:
                break
            selected_experts.append(expert)
            current_score += score
        experts[layer] = selected_experts
    return experts


def test_esft_top_p_reproduces_the_published_algorithm(make_stream, run_tool, tmp_path):
    rows = {"1": [0.4, 0.05, 0.3, 0.15, 0.1], "2": [0.2, 0.2, 0.2, 0.2, 0.2], "3": [0.0, 0.0, 1.0, 0.0, 0.0]}
    model = {"name": "esft", "path": None, "model_type": "deepseek_v2", "num_layers": 4, "moe_layers": [1, 2, 3],
             "num_experts": 5, "top_k": 2, "fingerprint": "sha256:" + "ee" * 32}
    records = [{"type": "expert", "layer": int(layer), "expert": e, "domains": {"law": {"esft_token": v}}}
               for layer, row in rows.items() for e, v in enumerate(row)]
    path = tmp_path / "esft.scores.jsonl"
    path.write_bytes(make_stream(records, kind="scores", model=model, encoding="jsonl",
                                 header_extra={"layers": [1, 2, 3], "num_experts": 5, "domains": ["law"]}))
    for top_p in (0.2, 0.5, 0.7, 1.0):
        result = run_tool(moe_select, [str(path), "--by", "esft_token", "--cumulative", str(top_p)])
        assert result.exit_code == 0, result.stderr
        want = esft_generate({k: {str(e): v for e, v in enumerate(row)} for k, row in rows.items()}, top_p)
        got = json.loads(result.stdout)["experts"]
        assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in want.items()}, top_p


JSD_METRICS = "jsd_routing,jsd_functional,jsd_routing_random,jsd_functional_random,af"


def test_jsd_routing_and_functional_specialisation_on_a_real_trace(traced, run_tool):
    from moetools.score.jsd import jsd_bits, load_unembedding, spherical_kmeans

    folder, traces = traced
    header, records, end = scores_of(run_tool, [traces["lens"], "--model", folder / "after", "--clusters", "4",
                                                "--metrics", JSD_METRICS])
    labels = spherical_kmeans(load_unembedding(folder / "after"), 4, seed=0)
    reader = read_input(traces["lens"], kinds="trace")
    sequences = list(reader)
    layers, E = reader.header["layers"], reader.header["num_experts"]
    for kind in ("routing", "functional"):
        counts = np.zeros((len(layers), E, 4))
        for s in sequences:                                   # brute force, token by token
            for li in range(len(layers)):
                for t, token in enumerate(s["tokens"]):
                    for k, e in enumerate(s["experts"][li, t]):
                        ids = [token] if kind == "routing" else s["logit_lens"][li, t, k]
                        for i in ids:
                            counts[li, int(e), labels[int(i)]] += 1
        for li, layer in enumerate(layers):
            pooled = counts[li].sum(axis=0)
            for e in range(E):
                record = next(r for r in records if r["layer"] == layer and r["expert"] == e)
                want = float(jsd_bits(counts[li, e], pooled)) if counts[li, e].sum() else None
                assert (record[f"jsd_{kind}"] is None and want is None) or \
                    abs(record[f"jsd_{kind}"] - want) < 1e-9
                assert record[f"jsd_{kind}_random"] is None or 0 <= record[f"jsd_{kind}_random"] <= 1
    assert end["summary"]["jsd"]["clusters"] == 4 and header["options"]["clusters"] == 4
    result = run_tool(moe_score, [str(traces["after"]), "--model", str(folder / "after"), "--metrics",
                                  "jsd_functional"])
    assert result.exit_code == 2 and "--logit-lens" in result.stderr
    result = run_tool(moe_score, [str(traces["after"]), "--metrics", "jsd_routing"])
    assert result.exit_code == 2 and "--model DIR" in result.stderr


def test_table_format(traced, run_tool):
    _, traces = traced
    result = run_tool(moe_score, [str(traces["after"]), "--format", "table", "--table-top", "3", "-q"])
    assert result.exit_code == 0 and "code: top 3 experts by das" in result.stdout


# -- bad input: one line, exit 2 (3 when truncated) ----------------------------------------------------

def test_missing_things_are_named_with_how_to_produce_them(traced, run_tool, tmp_path):
    _, traces = traced
    trace = str(traces["after"])
    cases = [
        ([trace, "--metrics", "pearson"], "--target-field"),
        ([trace, "--metrics", "pearson", "--target-field", "nothing"], "no numeric meta.nothing"),
        ([trace, "--metrics", "rc_shift"], "--rc-against"),
        ([trace, "--metrics", "das", "--general", "finance"], "general domain 'finance' is not in the trace"),
        ([trace, "--metrics", "das", "--domain-field", "id"], "no document has meta.id"),
        ([trace, "--metrics", "bogus"], "unknown metric 'bogus'"),
        ([trace, "--document-memory", "1", "--permutations", "10"], None),
    ]
    for args, message in cases:
        result = run_tool(moe_score, args)
        if message is None:
            assert result.exit_code == 0, result.stderr   # the tiny trace fits in 1 MiB
            continue
        assert result.exit_code == 2, (args, result.stderr)
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_one_domain_only_refuses_das_and_skew_by_name(make_stream, run_tool, tmp_path):
    from tests.trace_factory import make_records, write_trace

    one = tmp_path / "one.msgpack.zst"
    one.write_bytes(write_trace(make_records(documents=3, domains=("code",))))
    for metric in ("das", "skew"):
        result = run_tool(moe_score, [str(one), "--metrics", metric])
        assert result.exit_code == 2 and "code" in result.stderr and ("--general" in result.stderr or "two domains"
                                                                      in result.stderr)
    result = run_tool(moe_score, [str(one)])          # default: what the trace supports, with a note
    assert result.exit_code == 0 and "das not computed" in result.stderr
    tight = run_tool(moe_score, [str(one), "--document-memory", "1"])
    assert tight.exit_code == 0
    big = tmp_path / "big.msgpack.zst"
    shape = {"num_experts": 512, "layers": (0, 1, 2, 3)}
    big.write_bytes(write_trace(make_records(documents=300, tokens=4, domains=("a", "b"), **shape), **shape))
    result = run_tool(moe_score, [str(big), "--document-memory", "1"])
    assert result.exit_code == 2 and "--document-memory" in result.stderr


def test_wrong_kind_truncated_and_mixed_models(traced, run_tool, tmp_path):
    _, traces = traced
    result = run_tool(moe_score, [str(EXAMPLES / "scores" / "valid" / "spec-example.jsonl")])
    assert result.exit_code == 2 and "expected a trace stream" in result.stderr
    cut = tmp_path / "cut.msgpack.zst"
    cut.write_bytes(traces["after"].read_bytes()[:-40])
    assert run_tool(moe_score, [str(cut)]).exit_code == 3
    result = run_tool(moe_score, [str(traces["after"]), str(traces["before"])])
    assert result.exit_code == 2 and "another model" in result.stderr


# -- format examples ----------------------------------------------------------------------------------

SCORES = json.loads((EXAMPLES / "scores" / "manifest.json").read_text())


@pytest.mark.parametrize("name", SCORES["valid"])
def test_valid_scores_examples(name, run_tool):
    with open(EXAMPLES / "scores" / name, "rb") as source:
        records = list(StreamReader(source, validate=True))
    assert records is not None
    from moetools.cli.cat import command as moe_cat

    assert run_tool(moe_cat, ["--check", str(EXAMPLES / "scores" / name)]).exit_code == 0


@pytest.mark.parametrize("name", sorted(SCORES["invalid"]))
def test_invalid_scores_examples(name):
    with open(EXAMPLES / "scores" / name, "rb") as source, pytest.raises(FormatError) as raised:
        list(StreamReader(source, validate=True))
    assert SCORES["invalid"][name] in str(raised.value)


def test_every_scores_example_is_listed():
    folder = EXAMPLES / "scores"
    on_disk = {str(p.relative_to(folder)) for sub in ("valid", "invalid") for p in (folder / sub).iterdir()}
    assert on_disk == set(SCORES["valid"]) | set(SCORES["invalid"])


def test_the_writer_made_example_is_what_moe_score_makes_of_the_trace_example(run_tool):
    made = run_tool(moe_score, [str(EXAMPLES / "trace" / "valid" / "olmoe-tiny.jsonl"), "-q"]).stdout
    committed = (EXAMPLES / "scores" / "valid" / "olmoe-tiny.scores.jsonl").read_text()
    strip = [json.loads(x) for x in made.splitlines()], [json.loads(x) for x in committed.splitlines()]
    for got, want in zip(*strip):
        got.pop("tool", None), want.pop("tool", None)
        for entry in got.get("inputs", []) + want.get("inputs", []):
            entry.pop("path", None)
        assert got == want


def test_join_merges_by_layer_and_expert_and_refuses_disagreement(make_stream, run_tool, tmp_path):
    header = {"layers": [0], "num_experts": 2, "domains": ["code"], "source": "routing",
              "metrics": {"af": {"scope": "domain", "definition": "000 eq. 6"}}}
    routing = [{"type": "expert", "layer": 0, "expert": e, "domains": {"code": {"af": 0.5 * e}}} for e in range(2)]
    judged = [{"type": "expert", "layer": 0, "expert": e, "domains": {"code": {"edms": 0.9}, "legal": {"edms": 0.1}},
               "ems": 0.7} for e in (1, 0)] + [{"type": "layer", "layer": 0, "lds": 0.3}]
    judged_header = dict(header, source="judged", domains=["code", "legal"],
                         metrics={"edms": {"scope": "domain", "definition": "000 eq. 4"}})
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(make_stream(routing, kind="scores", encoding="jsonl", header_extra=header))
    b.write_bytes(make_stream(judged, kind="scores", encoding="jsonl", header_extra=judged_header))
    result = run_tool(moe_score, ["join", str(a), str(b)])
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert lines[0]["source"] == ["routing", "judged"] and lines[0]["domains"] == ["code", "legal"]
    assert {"af", "edms"} <= set(lines[0]["metrics"])        # a join may add derived metrics (EDMRS)
    first = lines[1]
    assert (first["layer"], first["expert"], first["ems"]) == (0, 0, 0.7)
    assert {k: first["domains"]["code"][k] for k in ("af", "edms")} == {"af": 0.0, "edms": 0.9}
    assert first["domains"]["legal"]["edms"] == 0.1 and "af" not in first["domains"]["legal"]
    assert lines[3] == {"type": "layer", "layer": 0, "lds": 0.3} and lines[-1]["summary"]["joined"] == 2
    with open(tmp_path / "j.jsonl", "w") as out:
        out.write(result.stdout)
    with open(EXAMPLES / "scores" / "valid" / "spec-example.jsonl", "rb") as check:
        assert list(StreamReader(check, validate=True))
    disagree = tmp_path / "c.jsonl"
    disagree.write_bytes(make_stream([dict(routing[1], domains={"code": {"af": 0.25}})], kind="scores",
                                     encoding="jsonl", header_extra=header))
    result = run_tool(moe_score, ["join", str(a), str(disagree)])
    assert result.exit_code == 2 and "refusing to join disagreeing scores" in result.stderr
    other = tmp_path / "d.jsonl"
    other.write_bytes(make_stream(routing, kind="scores", encoding="jsonl", header_extra=header,
                                  model={"name": "x", "fingerprint": "sha256:other"}))
    result = run_tool(moe_score, ["join", str(a), str(other)])
    assert result.exit_code == 2 and "refusing to join" in result.stderr
