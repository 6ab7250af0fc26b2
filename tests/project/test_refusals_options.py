"""Options do what they say or are refused with one line (exit 2): moe-score --metrics / --model,
moe-select --cumulative on a signed metric, moe-mask leaving a MONET layer fewer than top-k experts,
moe-tune on data where no token carries a loss."""

from __future__ import annotations

import json

import pytest

from moetools.cli.score import command as moe_score
from moetools.cli.select import command as moe_select
from moetools.streams import read_stream
from tests.cli_checks import invoke
from tests.models import test_adapters
from tests.tiny_models import save_tiny_olmoe, save_word_tokenizer
from tests.trace_factory import make_records, write_trace

WORDS = ["the", "a", "of", "to", "and", "expert", "model", "token", "court", "patient", "theorem", "code",
         "user", "assistant", ":", ";"]



def assert_refused(result, tool: str, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith(f"{tool}: ") for line in lines), result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def synthetic_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "synthetic.msgpack.zst"
    path.write_bytes(write_trace(make_records(documents=6, tokens=60)))
    return path


# -- moe-score --metrics: only what is asked ------------------------------------------------------------

@pytest.mark.parametrize("asked", [["esft_token"], ["af", "das"], ["routed"]])
def test_score_metrics_writes_only_the_asked_metrics(run_tool, synthetic_trace, tmp_path, asked):
    out = tmp_path / "scores.jsonl"
    result = run_tool(moe_score, [str(synthetic_trace), "--metrics", ",".join(asked), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    with open(out, "rb") as handle:
        reader = read_stream(handle, kinds="scores", validate=True)
        records = [r for r in reader if r.get("type") == "expert"]
        header = reader.header
    assert set(header["metrics"]) == set(asked)
    for record in records:
        assert set(record) <= {"type", "layer", "expert", "domains"}, record  # no skew, jsd, ...
        for values in record["domains"].values():
            assert set(values) == set(asked) - {"skew"}, values


# -- moe-score --model: the traced model or nothing -----------------------------------------------------

@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    root = tmp_path_factory.mktemp("traced")
    save_tiny_olmoe(root / "model", WORDS)
    save_tiny_olmoe(root / "other", WORDS, seed=1)  # same config and tokenizer, other weights
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": " ".join(WORDS[i:i + 8]), "domain": "ab"[i % 2]}) + "\n"
                              for i in range(6)))
    trace = root / "trace.msgpack.zst"
    assert invoke("moe-trace", [root / "model", corpus, "-o", trace]).exit_code == 0
    return root, trace


def test_score_model_must_be_the_traced_model(traced, tmp_path):
    root, trace = traced
    base = [trace, "--metrics", "jsd_routing", "--clusters", "4"]
    result = invoke("moe-score", [*base, "--model", root / "other", "-o", tmp_path / "other.jsonl"])
    assert_refused(result, "moe-score", f"--model {root / 'other'} is not the traced model")
    assert not (tmp_path / "other.jsonl").exists()
    result = invoke("moe-score", [*base, "--model", root / "model", "-o", tmp_path / "same.jsonl"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "same.jsonl").read_text().splitlines()]
    assert set(lines[0]["metrics"]) == {"jsd_routing"}  # the baseline too only when asked
    experts = [r for r in lines if r["type"] == "expert"]
    assert experts and all("jsd_routing" in r and "jsd_routing_random" not in r for r in experts)
    assert set(lines[-1]["summary"]["jsd"]) == {"clusters", "draws", "unknown_tokens", "jsd_routing"}


def test_score_model_without_a_jsd_metric_is_refused(traced):
    root, trace = traced
    result = invoke("moe-score", [trace, "--metrics", "af", "--model", root / "model"])
    assert_refused(result, "moe-score", "--model serves only jsd_routing", "--metrics asks for none of them")


@pytest.mark.parametrize("option, metrics, named", [
    (["--target-field", "toxicity"], "af", "--target-field serves only pearson"),
    (["--rc-against", "SELF"], "af,das", "--rc-against serves only rc_shift"),
    (["--general", "legal"], "af", "--general serves only das"),
    (["--format", "table"], "af", "--table-by das is not among --metrics"),
    (["--format", "table", "--table-by", "skew"], None, "--table-by skew: not a per-domain metric")])
def test_score_options_that_would_do_nothing_are_refused(run_tool, synthetic_trace, option, metrics, named):
    option = [str(synthetic_trace) if value == "SELF" else value for value in option]
    args = [str(synthetic_trace), *option, *(["--metrics", metrics] if metrics else [])]
    assert_refused(run_tool(moe_score, args), "moe-score", named)
    if metrics:  # with a metric the option serves, it runs
        served = {"--target-field": "pearson", "--rc-against": "rc_shift", "--general": "das",
                  "--format": "das"}[option[0]]
        result = run_tool(moe_score, [*args[:-1], f"{metrics},{served}", "--permutations", "0"])
        assert result.exit_code == 0, result.stderr


# -- moe-select --cumulative: a share, not a signed metric ----------------------------------------------

def scores_stream(make_stream, path, values: dict[int, list[float]], metric: str):
    model = {"name": "m", "path": None, "model_type": "olmoe", "num_layers": 2, "moe_layers": [0, 1],
             "num_experts": 4, "top_k": 2, "fingerprint": "sha256:" + "ee" * 32}
    records = [{"type": "expert", "layer": layer, "expert": e, "domains": {"law": {metric: v}}}
               for layer, row in values.items() for e, v in enumerate(row)]
    path.write_bytes(make_stream(records, kind="scores", model=model, encoding="jsonl",
                                 header_extra={"layers": [0, 1], "num_experts": 4, "domains": ["law"]}))
    return path


def test_cumulative_on_a_signed_metric_is_refused(run_tool, make_stream, tmp_path):
    das = scores_stream(make_stream, tmp_path / "das.jsonl", {0: [0.3, -0.1, -0.1, -0.1], 1: [0.1, 0.0, -0.05, 0.0]},
                        "das")
    result = run_tool(moe_select, [str(das), "--by", "das", "--cumulative", "0.2"])
    assert_refused(result, "moe-select", "das is signed", "--top N")
    # a metric of any name with a negative value: the same refusal, naming where
    lift = scores_stream(make_stream, tmp_path / "lift.jsonl", {0: [0.5, 0.4, 0.1, 0.0], 1: [0.6, -0.2, 0.5, 0.1]},
                         "lift")
    result = run_tool(moe_select, [str(lift), "--by", "lift", "--cumulative", "0.5"])
    assert_refused(result, "moe-select", "lift is signed (layer 1, expert 1: -0.2)")
    # a share (every value >= 0) is ESFT's top-p as before
    share = scores_stream(make_stream, tmp_path / "share.jsonl", {0: [0.5, 0.3, 0.2, 0.0], 1: [0.1, 0.6, 0.2, 0.1]},
                          "esft_token")
    result = run_tool(moe_select, [str(share), "--by", "esft_token", "--cumulative", "0.6"])
    assert result.exit_code == 0, result.stderr
    assert {k: sorted(v) for k, v in json.loads(result.stdout)["experts"].items()} == {"0": [0, 1], "1": [1]}


# -- moe-mask: MONET keeps at least top-k composed experts ----------------------------------------------

def test_monet_mask_leaving_fewer_than_top_k_is_refused(tmp_path):
    model = test_adapters._monet("vertical")  # 16 composed experts per layer, top-k 2
    model.save_pretrained(tmp_path / "monet")
    save_word_tokenizer(tmp_path / "monet", WORDS)
    experts = tmp_path / "fifteen.json"
    experts.write_text(json.dumps({"experts": {"0": list(range(15))}}))
    result = invoke("moe-mask", [tmp_path / "monet", "--experts", experts, "-o", tmp_path / "masked"])
    assert_refused(result, "moe-mask", "layer 0: 1 experts left, fewer than top-k = 2")
    assert not (tmp_path / "masked").exists()


# -- moe-tune: no label tokens, no training -------------------------------------------------------------

@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("chat-model")
    save_tiny_olmoe(directory, WORDS)
    (directory / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} ; {% endfor %}"
        "{% if add_generation_prompt %}assistant : {% endif %}")
    return directory


def test_tune_refuses_data_where_no_token_carries_a_loss(chat_model, tmp_path):
    chats = tmp_path / "chats.jsonl"
    prompt = " ".join(["the patient"] * 10)  # 20 words: the answer starts beyond --seq-len 8
    chats.write_text("".join(json.dumps({"messages": [{"role": "user", "content": prompt},
                                                      {"role": "assistant", "content": "court code"}]}) + "\n"
                             for _ in range(4)))
    args = ["train", chat_model, "--data", chats, "-o", tmp_path / "adapter", "--steps", "2", "--seq-len", "8",
            "--mode", "full", "--batch-size", "2"]
    result = invoke("moe-tune", args)
    assert_refused(result, "moe-tune", f"{chats}: no token carries a loss", "--seq-len 8")
    assert not (tmp_path / "adapter").exists()
    # one token per sequence: nothing to predict either
    single = tmp_path / "single.jsonl"
    single.write_text(json.dumps({"text": "theorem"}) + "\n")
    result = invoke("moe-tune", [*args[:2], "--data", single, *args[4:]])
    assert_refused(result, "moe-tune", "no token carries a loss (every sequence is a single token")
    # with room for the answer it trains
    args[args.index("--seq-len") + 1] = "40"
    result = invoke("moe-tune", args)
    assert result.exit_code == 0, result.output
