"""moe-sample on synthetic traces with known activations (tests/trace_factory.py)."""

from __future__ import annotations

import io
import math
from collections import defaultdict

import numpy as np
import pytest
from click.testing import CliRunner

from moetools.cli.sample import command
from moetools.sample import SampleOptions, Sampler, sample_trace
from moetools.streams import StreamReader, StreamWriter
from tests.trace_factory import make_records, write_trace

LAYERS = (0, 2)


def run_cli(data: bytes, *args) -> tuple[int, list[dict], dict, str]:
    """(exit code, expert records, end record, stderr) of moe-sample on ``data`` from stdin."""
    result = CliRunner().invoke(command, ["--format", "jsonl", "-q", *args], input=data)
    records, end = [], {}
    if result.exit_code == 0:
        reader = StreamReader(io.BytesIO(result.stdout_bytes), kinds="samples")
        records = list(reader)
        end = reader.ends[0]
    return result.exit_code, records, end, result.stderr


def sample(records, **options) -> list[dict]:
    reader = StreamReader(io.BytesIO(write_trace(records)), kinds="trace")
    return sample_trace(reader, SampleOptions(**options))[1]


def contexts_of(record: dict):
    for side, sets in (("explain", record["explain"]), ("holdout", record["holdout"])):
        for name, contexts in sets.items():
            for context in contexts:
                yield side, name, context


def routing(records) -> dict:
    """(doc, document position) -> (layer row -> {expert: activation}) from the trace itself."""
    table = {}
    for record in records:
        for t in range(len(record["tokens"])):
            table[(record["doc_id"], record["offset"] + t)] = [
                {int(e): float(v) for e, v in zip(record["experts"][row, t], record["contribution"][row, t])}
                for row in range(len(LAYERS))]
    return table


# -- the sets are what they claim to be ----------------------------------------------------------

def test_top_n_is_exactly_the_true_top_n():
    records = make_records(documents=5, tokens=[150, 64, 97, 200, 33], seed=3)
    out = sample(records, top=7, holdout_fraction=0.0, context=16, split_region=64)
    best = defaultdict(dict)  # (row, expert) -> {(doc, cell): max activation}
    for record in records:
        for row in range(len(LAYERS)):
            for t in range(len(record["tokens"])):
                cell = (record["doc_id"], (record["offset"] + t) // 16)
                for e, v in zip(record["experts"][row, t], record["contribution"][row, t]):
                    cells = best[(row, int(e))]
                    cells[cell] = max(cells.get(cell, 0.0), float(v))
    for expert_record in out:
        row, expert = LAYERS.index(expert_record["layer"]), expert_record["expert"]
        truth = sorted(best[(row, expert)].items(), key=lambda item: -item[1])[:7]
        got = [((c["doc_id"], c["offset"] // 16), c["score"]) for c in expert_record["explain"]["top"]]
        assert [cell for cell, _ in got] == [cell for cell, _ in truth]
        assert np.allclose([s for _, s in got], [s for _, s in truth])
        for context in expert_record["explain"]["top"]:
            assert context["activation"][context["mark"]] == pytest.approx(context["score"])


def _weighted_trace(weights) -> list[dict]:
    """One layer, 2 experts, top-1: expert 0 fires once per 4-token cell with activation weights[c]."""
    cells = len(weights)
    experts = np.ones((1, 4 * cells, 1), dtype="<u2")
    values = np.full((1, 4 * cells, 1), 0.5, dtype="<f4")
    for c, weight in enumerate(weights):
        experts[0, 4 * c + 1, 0] = 0
        values[0, 4 * c + 1, 0] = weight
    return [{"type": "sequence", "doc_id": "d", "window": 0, "offset": 0, "meta": {}, "tokens":
             np.zeros(4 * cells, "<i4"), "pieces": ["x"] * (4 * cells), "experts": experts, "gates": values,
             "contribution": values, "prob_sum": np.zeros((1, 2), "<f4")}]


@pytest.mark.parametrize("draws", [1, 2])
def test_weighted_inclusion_frequencies_match_the_weights(draws):
    weights = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    (record,) = _weighted_trace(weights)
    header = {"layers": [0], "num_experts": 2, "top_k": 1}
    runs = 3000
    hits = np.zeros(len(weights))
    for seed in range(runs):
        sampler = Sampler(header, SampleOptions(top=0, weighted=draws, negatives=0, holdout_positive=0,
                                                holdout_negative=0, context=4, split_region=4,
                                                holdout_fraction=0.0, seed=seed, experts=(0,)))
        sampler.feed(record)
        (result,), _ = sampler.results()
        for context in result["explain"]["weighted"]:
            hits[context["offset"] // 4] += 1
    p = weights / weights.sum()
    if draws == 1:
        expected = p
    else:  # without replacement: first draw ∝ w, second ∝ w among the rest
        expected = np.array([p[i] + sum(p[j] * weights[i] / (weights.sum() - weights[j])
                                        for j in range(len(weights)) if j != i) for i in range(len(weights))])
    frequency = hits / runs
    tolerance = 4 * np.sqrt(expected * (1 - expected) / runs)  # 4 sigma; seeds are fixed, so no flakes
    assert np.all(np.abs(frequency - expected) < tolerance), (frequency, expected)


@pytest.mark.parametrize("span,hard", [(1, "none"), (3, "none"), (1, "token"), (2, "domain")])
def test_negatives_never_fire_at_the_marked_token(span, hard):
    records = make_records(documents=4, tokens=130, seed=5)
    table = routing(records)
    tokens_of = {(r["doc_id"], r["offset"] + t): int(r["tokens"][t]) for r in records for t in range(len(r["tokens"]))}
    out = sample(records, negative_span=span, hard_negatives=hard, holdout_fraction=0.3)
    checked = 0
    for expert_record in out:
        row, expert = LAYERS.index(expert_record["layer"]), expert_record["expert"]
        for side, name, context in contexts_of(expert_record):
            if name != "negative":
                continue
            position = context["offset"] + context["mark"]
            assert context["activation"][context["mark"]] == 0.0
            for back in range(span):  # the mark and the span-1 tokens before it (inside the record)
                key = (context["doc_id"], position - back)
                if key in table and (position - back) // 64 == position // 64:
                    assert expert not in table[key][row]
            if hard == "token":  # the marked token routes to the expert elsewhere in the same trace window
                window = position // 64
                same = [p for (d, p), tok in tokens_of.items() if d == context["doc_id"] and p // 64 == window
                        and tok == tokens_of[(context["doc_id"], position)] and expert in table[(d, p)][row]]
                assert same
            checked += 1
    assert checked > 50


def test_explain_and_holdout_never_share_text():
    records = make_records(documents=8, tokens=300, seed=11)
    for region in (64, 0):
        out = sample(records, holdout_fraction=0.4, split_region=region)
        holdout_seen = 0
        for expert_record in out:
            explain = [(c["doc_id"], c["offset"], len(c["pieces"]), c["region"])
                       for side, _, c in contexts_of(expert_record) if side == "explain"]
            holdout = [(c["doc_id"], c["offset"], len(c["pieces"]), c["region"])
                       for side, _, c in contexts_of(expert_record) if side == "holdout"]
            holdout_seen += len(holdout)
            explain_regions = {(d, r) for d, _, _, r in explain}
            for doc, offset, length, reg in holdout:
                assert (doc, reg) not in explain_regions
                if region == 0:
                    assert all(d != doc for d, *_ in explain)
                for d, o, n, _ in explain:  # no overlap of token ranges either
                    assert d != doc or o + n <= offset or offset + length <= o
            ids = [c["id"] for _, _, c in contexts_of(expert_record)]
            assert len(ids) == len(set(ids))
        assert holdout_seen > 0


# -- determinism ----------------------------------------------------------------------------------

def test_same_seed_same_bytes_and_another_seed_differs():
    data = write_trace(make_records(documents=4, tokens=120, seed=2))
    first = CliRunner().invoke(command, ["-q", "--top", "3", "--seed", "9"], input=data)
    second = CliRunner().invoke(command, ["-q", "--top", "3", "--seed", "9"], input=data)
    other = CliRunner().invoke(command, ["-q", "--top", "3", "--seed", "10"], input=data)
    assert first.exit_code == second.exit_code == other.exit_code == 0
    assert first.stdout_bytes == second.stdout_bytes
    reader = lambda result: list(StreamReader(io.BytesIO(result.stdout_bytes)))
    assert [[c["id"] for c in r["explain"]["weighted"]] for r in reader(first)] != \
           [[c["id"] for c in r["explain"]["weighted"]] for r in reader(other)]


def test_shard_order_does_not_change_the_result():
    records = make_records(documents=6, tokens=150, seed=4, logit_lens=2)
    shards = [write_trace(records[i::3]) for i in range(3)]
    outputs = set()
    for order in ((0, 1, 2), (2, 0, 1), (1, 2, 0)):
        result = CliRunner().invoke(command, ["-q"], input=b"".join(shards[i] for i in order))
        assert result.exit_code == 0, result.output
        outputs.add(result.stdout_bytes)
    assert len(outputs) == 1  # byte for byte
    # one segment with the records reversed: the header counts segments, the data records are the same
    single = CliRunner().invoke(command, ["-q"], input=write_trace(records[::-1]))
    assert _same(list(StreamReader(io.BytesIO(single.stdout_bytes))),
                 list(StreamReader(io.BytesIO(outputs.pop()))))


def _same(a: list[dict], b: list[dict]) -> bool:
    def plain(value):
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value
    return plain(a) == plain(b)


# -- flags, flags in the output, errors -----------------------------------------------------------

def test_short_experts_are_kept_flagged_and_summarised():
    data = write_trace(make_records(documents=3, tokens=100, seed=1, rare_expert=5))
    code, records, end, _stderr = run_cli(data, "--top", "5")
    assert code == 0
    assert len(records) == len(LAYERS) * 8
    rare = [r for r in records if r["expert"] == 5]
    assert all(r["short"] and r["status"] == "short" and r["found"]["top"] < 5 for r in rare)
    summary = end["summary"]
    assert summary["short_experts"] >= 2 and summary["short_by_set"]["top"]["experts"] >= 2
    assert summary["short_by_set"]["top"]["missing"] == sum(5 - r["found"]["top"] for r in records)
    result = CliRunner().invoke(command, ["--top", "5", "-o", "-"], input=data)
    assert "short" in result.stderr


def test_filters_layers_experts_domain_min_count():
    records = make_records(documents=4, tokens=100, seed=6, rare_expert=3)
    code, out, end, _ = run_cli(write_trace(records), "--layers", "2", "--experts", "1-3", "--domain", "legal",
                                "--min-count", "5")
    assert code == 0
    assert [(r["layer"], r["expert"]) for r in out] == [(2, 1), (2, 2), (2, 3)]
    assert end["summary"]["skipped_by_domain"] == sum(1 for r in records if r["meta"]["domain"] != "legal")
    for record in out:
        for _, _, context in contexts_of(record):
            assert context["meta"]["domain"] == "legal"
    rare = out[2]
    assert rare["stats"]["firing_tokens"] < 5 and rare["status"] == "below-min-count"
    assert not rare["explain"]["top"] and end["summary"]["below_min_count"] == 1
    code, *_ , stderr = run_cli(write_trace(records), "--layers", "1")
    assert code == 2 and "not MoE layers" in stderr
    result = CliRunner().invoke(command, ["--format", "jsonl", "--domain", "nowhere"], input=write_trace(records))
    assert result.exit_code == 0 and "no sequence has meta.domain 'nowhere'" in result.stderr


def test_domain_matched_negatives_follow_the_positive_mix():
    records = make_records(documents=6, tokens=200, seed=8, domains=("code", "legal", "math"))
    for record in records:  # expert 0 of the first layer fires only on code documents
        if record["meta"]["domain"] != "code":
            record["experts"][0][record["experts"][0] == 0] = 7
    out = sample(records, hard_negatives="domain", top=6, weighted=0, negatives=6, experts=(0,), layers=(0,))
    negative_domains = [c["meta"]["domain"] for c in out[0]["explain"]["negative"]]
    assert negative_domains == ["code"] * 6


def test_logit_lens_tokens_and_context_fields():
    code, out, _, _ = run_cli(write_trace(make_records(documents=2, tokens=80, logit_lens=3)))
    assert code == 0
    record = out[0]
    assert record["logit_lens"] and {"id", "piece", "count"} <= set(record["logit_lens"][0])
    context = record["explain"]["top"][0]
    assert {"id", "doc_id", "window", "offset", "mark", "pieces", "activation", "score", "meta", "region"} \
        <= set(context)
    assert len(context["pieces"]) == len(context["activation"]) <= 32
    assert context["pieces"] == [f"t{int(t)}" for t in context["tokens"]]  # ids and pieces line up


def test_explain_stage_reads_the_records():
    from moetools.explain.runner import select_examples

    (record, *_) = sample(make_records(documents=3, tokens=120))
    chosen = select_examples(record, 20)
    assert chosen and all(max(c["activation"]) > 0 for c in chosen)


@pytest.mark.parametrize("mutate,code,message", [
    ("truncate", 3, "input ends inside"),
    ("no-end", 3, "end record"),
    ("kind", 2, "expected a trace stream"),
    ("garbage", 2, "not a moetools stream"),
    ("shape", 2, "'experts' has shape"),
    ("header", 2, "no 'layers'"),
])
def test_bad_input_exit_codes(tmp_path, mutate, code, message):
    records = make_records(documents=2, tokens=70)
    data = write_trace(records, compress=False)
    if mutate == "truncate":
        data = data[: len(data) - 40]
    elif mutate == "no-end":
        data = write_trace(records, close=False)
    elif mutate == "kind":
        out = io.BytesIO()
        with StreamWriter(out, "labels", encoding="jsonl") as writer:
            writer.write({"type": "label", "layer": 0, "expert": 0})
        data = out.getvalue()
    elif mutate == "garbage":
        data = b"\x00\x01 not a stream"
    elif mutate == "shape":
        records[1]["experts"] = records[1]["experts"][:1]
        data = write_trace(records)
    elif mutate == "header":
        out = io.BytesIO()
        with StreamWriter(out, "trace", model={"fingerprint": "x"}) as writer:
            writer.write(records[0])
        data = out.getvalue()
    target = tmp_path / "samples.msgpack.zst"
    result = CliRunner().invoke(command, ["-o", str(target)], input=data)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert not target.exists() and not (tmp_path / "samples.msgpack.zst.partial").exists()


def test_option_errors_are_usage_errors():
    data = write_trace(make_records(documents=1, tokens=40))
    for args in (["--split-region", "40"], ["--experts", "a-b"], ["--experts", "99"]):
        result = CliRunner().invoke(command, args, input=data)
        assert result.exit_code == 2, (args, result.output)


def test_memory_is_bounded_by_set_sizes_not_trace_length():
    header = {"layers": list(LAYERS), "num_experts": 8, "top_k": 2}
    sampler = Sampler(header, SampleOptions(top=3, weighted=2, negatives=2, holdout_positive=1,
                                            holdout_negative=1))
    for record in make_records(documents=30, tokens=256, seed=12):
        sampler.feed(record)
    banks = [sampler.top, sampler.weighted, sampler.holdout_positive, *sampler.negative.values(),
             *sampler.holdout_negative.values()]
    assert max(len(heap) for bank in banks for heap in bank.heaps) <= 5
    assert math.isclose(sampler.tokens, 30 * 256)


def test_format_example_is_current(tmp_path):
    """formats/examples/samples/samples.jsonl is what moe-sample makes of the trace beside it."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "formats" / "examples" / "samples"
    args = ["--format", "jsonl", "-q", "--context", "8", "--split-region", "16", "--top", "2", "--weighted", "1",
            "--negatives", "1", "--holdout-positive", "1", "--holdout-negative", "1", "--experts", "0-1",
            "--holdout-fraction", "0.3", "-o", str(tmp_path / "out.jsonl"), str(folder / "trace.jsonl")]
    assert CliRunner().invoke(command, args).exit_code == 0
    with open(tmp_path / "out.jsonl", "rb") as made_file, open(folder / "samples.jsonl", "rb") as shipped_file:
        made = list(StreamReader(made_file, kinds="samples"))
        shipped = list(StreamReader(shipped_file, kinds="samples"))
    assert _same(made, shipped) and len(shipped) == 2


def test_layer_chunks_give_the_same_result(monkeypatch):
    from moetools.sample import sampler as sampler_module

    records = make_records(documents=3, tokens=90, seed=13, logit_lens=2)
    whole = sample(records, hard_negatives="token")
    monkeypatch.setattr(sampler_module, "DENSE_BUDGET", 1)  # one layer row at a time
    assert _same(sample(records, hard_negatives="token"), whole)


def test_moe_trace_conformance_files():
    """The real tiny-OLMoE trace of formats/examples/trace samples; its invalid variants are refused (exit 2)."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "formats" / "examples" / "trace"
    valid = folder / "valid" / "olmoe-tiny.jsonl"
    if not valid.exists():
        pytest.skip("moe-trace's conformance files are not there")
    result = CliRunner().invoke(command, ["-q", "--format", "jsonl", "--top", "2", str(valid)])
    assert result.exit_code == 0, result.output
    records = list(StreamReader(io.BytesIO(result.stdout_bytes), kinds="samples"))
    header = StreamReader(io.BytesIO(valid.read_bytes())).header
    assert len(records) == len(header["layers"]) * header["num_experts"]
    assert any(record["explain"]["top"] for record in records)
    for name, message in (("experts-shape", "'experts' has shape"), ("expert-out-of-range", "ids >= num_experts"),
                          ("pieces-length", "'pieces' must be a list of"), ("no-contribution", "'contribution'")):
        result = CliRunner().invoke(command, ["-q", str(folder / "invalid" / f"{name}.jsonl")])
        assert result.exit_code == 2 and message in result.stderr, (name, result.stderr)


def test_a_record_given_twice_gives_no_duplicate_context():
    records = make_records(documents=2, tokens=100, seed=14)
    out = sample(records + records, top=30, holdout_fraction=0.3)
    for record in out:
        for side, sets in (("explain", record["explain"]), ("holdout", record["holdout"])):
            for contexts in sets.values():
                ids = [c["id"] for c in contexts]
                assert len(ids) == len(set(ids))


def test_rank_by_gate():
    records = make_records(documents=2, tokens=100, seed=15)
    code, out, _, _ = run_cli(write_trace(records), "--rank", "gate", "--top", "3", "--holdout-fraction", "0")
    assert code == 0
    table = {(r["doc_id"], r["offset"] + t): r["gates"][:, t] for r in records for t in range(len(r["tokens"]))}
    experts = {(r["doc_id"], r["offset"] + t): r["experts"][:, t] for r in records for t in range(len(r["tokens"]))}
    for record in out:
        row = LAYERS.index(record["layer"])
        for context in record["explain"]["top"]:
            key = (context["doc_id"], context["offset"] + context["mark"])
            slot = list(experts[key][row]).index(record["expert"])
            assert context["score"] == pytest.approx(float(table[key][row][slot]))


def test_an_expert_that_fires_everywhere_has_no_negatives_and_says_so():
    """Negatives are counted, never invented: experts on every token are short of negatives, by how many."""
    tokens = 64
    experts = np.zeros((1, tokens, 2), dtype="<u2")
    experts[0, :, 1] = 1                                     # top-2 of 2: both experts on every token
    values = np.full((1, tokens, 2), 0.5, dtype="<f4")
    record = {"type": "sequence", "doc_id": "d", "window": 0, "offset": 0, "meta": {}, "tokens":
              np.zeros(tokens, "<i4"), "pieces": ["x"] * tokens, "experts": experts, "gates": values,
              "contribution": values, "prob_sum": np.zeros((1, 2), "<f4")}
    sampler = Sampler({"layers": [0], "num_experts": 2, "top_k": 2},
                      SampleOptions(top=2, weighted=0, negatives=3, holdout_positive=0, holdout_negative=0,
                                    context=8, split_region=8, holdout_fraction=0.0))
    sampler.feed(record)
    results, summary = sampler.results()
    assert len(results) == 2
    for result in results:
        assert result["explain"]["negative"] == [] and result["found"]["negative"] == 0
        assert result["short"] and result["status"] == "short" and len(result["explain"]["top"]) == 2
    assert summary["short_by_set"]["negative"] == {"experts": 2, "missing": 6}
    assert summary["negatives_found"] == 0
