"""moe-score --labels: judged detection scores against a real HTTP server on 127.0.0.1.

No mock of the client: tests/llm_stub.py is a real OpenAI-compatible server; the scorer reads its
answers through moetools.llm's openai backend, cache and accounting.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moetools.cli.score import command as moe_score
from moetools.cli.select import command as moe_select
from moetools.score.judge.metrics import chance_levels, detection_metrics, layer_mean, mean_metrics
from moetools.score.judge.prompts import SCORER_SYSTEM, SCORER_USER, build_scorer_messages, parse_answer
from moetools.streams.files import read_input
from tests.judge_fixture import MODEL, keyword_answer, write_labels, write_samples
from tests.llm_stub import LLMStub

#: the source papers, beside the checkout (formats/REFERENCES.md); tests that read them skip without them
PAPERS = Path(__file__).resolve().parents[3] / "shared" / "papers"
SECRET = "sk-test-Judge9SECRETkey0987654321"

# Paper 000, Appendix A.2, typed out again here (independently of moetools/score/judge/prompts.py)
PAPER_SYSTEM = (
    "We're studying experts in a large-scale Mixture of Experts (MoE) language model. Each expert in the MoE layers "
    "specializes in processing certain types of content, knowledge domains, linguistic patterns, or reasoning "
    "tasks.\n\nYou will be given a short explanation of what this expert specializes in, and then be shown N "
    "example sequences in random order.\n\nYou will have to return a comma-separated list of the examples where "
    "you think this expert should be activated by the router, based on the content type, domain knowledge, or "
    "linguistic characteristics required.\n\nFor example, your response might look like \"1, 3, 5\".\n\nTry not "
    "to be overly specific in your interpretation of the explanation.\n\nIf you think there are no examples where "
    "this expert will be significantly activated, you should just respond with \"None\".\n\nYou should include "
    "nothing else in your response other than comma-separated numbers or the word \"None\" - this is important.")
PAPER_USER = "The documents which this expert is activated are given below:\n\n{examples}"


def records_of(path):
    return [r for r in read_input(str(path), kinds="scores", validate=True)]


@pytest.fixture
def inputs(tmp_path):
    write_samples(tmp_path / "samples.jsonl")
    write_labels(tmp_path / "labels.jsonl")
    write_labels(tmp_path / "code.labels.jsonl", domain="code")
    return tmp_path


@pytest.fixture
def stub():
    with LLMStub() as server:
        server.answer = keyword_answer
        yield server


def judge(run_tool, inputs, stub, *extra, labels=("labels.jsonl",), out="judged.jsonl"):
    args = [str(inputs / "samples.jsonl"), "--api-base", stub.url, "--model", "stub-model",
            "--cache-dir", str(inputs / "cache"), "-o", str(inputs / out), "-O", "backoff_base=0.01"]
    for name in labels:
        args += ["--labels", str(inputs / name)]
    return run_tool(moe_score, args + list(extra))


# -- the prompt and the parser ------------------------------------------------------------------------

def test_scorer_prompt_is_paper_000_appendix_a2_verbatim():
    assert SCORER_SYSTEM == PAPER_SYSTEM and SCORER_USER == PAPER_USER
    messages = build_scorer_messages("This expert specializes in tax law", [
        {"pieces": [" the", " <<", "court\n"]}, {"pieces": ["def", " f"]}])
    assert messages[0] == {"role": "system", "content": PAPER_SYSTEM}
    assert messages[1]["content"] == ("Here is the explanation: This expert specializes in tax law\n\n"
                                      + PAPER_USER.format(examples="Example 1:  the <<court\\n\nExample 2: def f"))


def test_scorer_prompt_matches_the_text_of_paper_000():
    paper = next(PAPERS.glob("000_*.txt"), None)
    if paper is None:
        pytest.skip(f"paper 000 is not at {PAPERS} (../shared/papers beside the checkout)")
    text = paper.read_text(encoding="utf-8")  # page numbers and PDF line breaks removed
    section = text[text.index("#### **System:**"):text.index("### A.3")]
    words = " ".join(line for line in section.split() if not line.isdigit())
    for paragraph in PAPER_SYSTEM.split("\n\n"):
        assert " ".join(paragraph.split()) in words
    assert "The documents which this expert is activated are given below:" in words


@pytest.mark.parametrize("answer, n, expected", [
    ("1, 3, 5", 5, {1, 3, 5}), ("None", 3, set()), (" none. ", 3, set()), ('"2,4"', 4, {2, 4}),
    ("7", 20, {7}), ("1, 21", 20, None), ("0", 20, None), ("Examples 1 and 3", 5, None), ("", 5, None),
    ("1, 3, and 5", 5, None), ("I think 2", 5, None)])
def test_answers_are_numbers_in_range_or_none_never_guessed(answer, n, expected):
    chosen, why = parse_answer(answer, n)
    assert chosen == expected and (why is None) == (expected is not None)


# -- metric arithmetic, hand-computed -----------------------------------------------------------------

def test_detection_metrics_by_hand():
    # truth 1 1 1 0 0, predicted 1 0 1 1 0: TP 2, FN 1, FP 1, TN 1
    m = detection_metrics([1, 1, 1, 0, 0], [1, 0, 1, 1, 0])
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 1)
    assert m["accuracy"] == pytest.approx(3 / 5)            # EMS, 000 eq. 3
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    none = detection_metrics([1, 0], [0, 0])                  # the answer "None"
    assert none["precision"] is None and none["f1"] == 0 and none["accuracy"] == 0.5
    one_class = detection_metrics([1, 1], [1, 0])
    assert one_class["balanced_accuracy"] is None and one_class["accuracy"] == 0.5
    assert mean_metrics([{"accuracy": 1.0, "precision": None}, {"accuracy": 0.5, "precision": 0.5}]) == \
        {"accuracy": 0.75, "precision": 0.5, "recall": None, "f1": None, "balanced_accuracy": None}
    assert layer_mean([1.0, None, 0.5]) == 0.75                 # LDS, 000 eq. 5
    chance = chance_levels(10, 10)
    assert chance["coin"]["accuracy"] == 0.5 and chance["all_positive"]["f1"] == pytest.approx(2 / 3)
    assert chance["none"]["accuracy"] == 0.5 and chance["none"]["f1"] == 0.0


# -- the command against the stub ---------------------------------------------------------------------

def test_judged_scores_with_baseline_cache_and_accounting(run_tool, inputs, stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    result = judge(run_tool, inputs, stub, labels=("labels.jsonl", "code.labels.jsonl"))
    assert result.exit_code == 0, result.stderr
    records = records_of(inputs / "judged.jsonl")
    experts = [r for r in records if r["type"] == "expert"]
    layers = [r for r in records if r["type"] == "layer"]
    assert len(experts) == 8 and {r["layer"] for r in layers} == {0, 1}
    for record in experts:
        assert record["ems"] == 1.0 and record["f1"] == 1.0 and record["balanced_accuracy"] == 1.0
        assert record["domains"]["code"]["edms"] == 1.0
        assert record["judged"]["mono"]["scorer"] == "llm" and record["judged"]["mono"]["positives"] == 10
        assert record["ems_shuffled"] is not None
    # the shuffled-label baseline is far below the real labels (donors of the other kind score 0)
    assert all(layer["lds"] == 1.0 and layer["lds_shuffled"] < 0.5 for layer in layers)
    # 8 experts x (label + shuffled) x 2 prompts; every request carried the key, no output holds it
    assert len(stub.requests) == 32
    assert "Judged" not in result.stderr and "requests 32" in result.stderr
    assert SECRET not in (inputs / "judged.jsonl").read_text() + result.stderr + result.stdout
    # mono requests show the 20 samples in a shuffled order with no << >> marks
    users = [r["body"]["messages"][1]["content"] for r in stub.requests]
    mono = [u for u in users if "Example 20:" in u]
    assert len(mono) == 16 and all(u.count("\nExample ") == 20 and "<<" not in u for u in mono)
    assert len({u.split("Example 1: ")[1].split("\n")[0] for u in mono}) > 1   # orders differ
    # a rerun is served from the cache: 0 requests, same numbers
    again = judge(run_tool, inputs, stub, labels=("labels.jsonl", "code.labels.jsonl"), out="again.jsonl")
    assert again.exit_code == 0 and len(stub.requests) == 32 and "cache hits 32" in again.stderr
    strip = [[{k: v for k, v in r.items() if k not in ("tool", "summary", "judged")} for r in records_of(p)]
             for p in (inputs / "judged.jsonl", inputs / "again.jsonl")]
    assert strip[0] == strip[1]


def test_repeats_shuffle_the_order_with_a_recorded_seed(run_tool, inputs, stub):
    result = judge(run_tool, inputs, stub, "--repeats", "3", "--no-baseline", "--seed", "7")
    assert result.exit_code == 0, result.stderr
    assert len(stub.requests) == 8 * 3
    firsts = [r["body"]["messages"][1]["content"] for r in stub.requests
              if "expert" in r["body"]["messages"][1]["content"]]
    assert len(set(firsts)) == 24            # every request shows its own order
    header = json.loads((inputs / "judged.jsonl").read_text().splitlines()[0])
    assert header["options"]["seed"] == 7 and header["options"]["repeats"] == 3
    assert "ems_shuffled" not in header["metrics"]


def holdout_of(path) -> dict:
    """(layer, expert) -> the samples stream's holdout lists, as the scorer read them."""
    return {(r["layer"], r["expert"]): r["holdout"] for r in read_input(str(path), kinds="samples")
            if r.get("type") == "expert"}


def test_verdicts_name_each_holdout_sample_its_truth_and_every_repeats_prediction(run_tool, inputs, stub):
    def answer(body):                         # right on every sample but the one shown first: a known mistake
        chosen = keyword_answer(body)
        numbers = [] if chosen == "None" else chosen.split(", ")
        numbers = [n for n in numbers if n != "1"] if "1" in numbers else numbers + ["1"]
        return ", ".join(sorted(numbers, key=int)) or "None"

    stub.answer = answer
    result = judge(run_tool, inputs, stub, "--repeats", "2", labels=("labels.jsonl", "code.labels.jsonl"))
    assert result.exit_code == 0, result.stderr
    holdout = holdout_of(inputs / "samples.jsonl")
    for record in (r for r in records_of(inputs / "judged.jsonl") if r["type"] == "expert"):
        mono = record["judged"]["mono"]
        verdicts = mono["verdicts"]
        assert [(v["holdout"], v["index"]) for v in verdicts] == \
            [("positive", i) for i in range(10)] + [("negative", i) for i in range(10)]
        for v in verdicts:                    # a reader finds the context by its place; the id agrees
            context = holdout[(record["layer"], record["expert"])][v["holdout"]][v["index"]]
            assert v["id"] == context["id"] and v["y"] == (v["holdout"] == "positive")
            assert len(v["yhat"]) == 2 and set(v["yhat"]) <= {0, 1}
        # the verdicts reproduce the metric: EMS is the share of right predictions, averaged over the repeats
        right = sum(v["yhat"][r] == v["y"] for v in verdicts for r in range(2)) / 40
        assert record["ems"] == pytest.approx(right) and record["ems"] == pytest.approx(0.95)
        assert "verdicts" not in json.dumps({k: v for k, v in record.items() if k != "judged"})
        # a P_domain(code) label is judged on the code samples only: their places are those in the full holdout
        code = record["judged"]["code"]["verdicts"]
        assert code and len(code) == record["judged"]["code"]["positives"] + record["judged"]["code"]["negatives"]
        for v in code:
            context = holdout[(record["layer"], record["expert"])][v["holdout"]][v["index"]]
            assert context["meta"]["domain"] == "code" and v["id"] == context["id"]
        assert "sim" not in verdicts[0] and "threshold" not in mono
        assert mono["explainer"] == {"backend": "offline", "model": None}      # which label was judged


def test_faults_429_500_malformed_json_and_out_of_range_answers_still_finish(run_tool, inputs, stub):
    stub.faults = ["429", "500", "malformed", None, "429", "length"]
    calls = {"n": 0}

    def answer(body):
        calls["n"] += 1
        if calls["n"] <= 2:
            return "3, 99"                   # out of range: a parse failure, asked again
        if "legal terms" in body["messages"][1]["content"] and "Stack" in body["messages"][1]["content"]:
            return "Examples 1 and 2"        # never parsable for this prompt: recorded as failed
        return keyword_answer(body)

    stub.answer = answer
    result = judge(run_tool, inputs, stub, "--no-baseline")
    assert result.exit_code == 0, result.stderr
    end = json.loads((inputs / "judged.jsonl").read_text().splitlines()[-1])
    accounting = end["summary"]["accounting"]
    assert accounting["retries"] >= 4 and accounting["answer_retries"] >= 2
    experts = [r for r in records_of(inputs / "judged.jsonl") if r["type"] == "expert"]
    failed = [r for r in experts if r["judged"]["mono"]["status"] == "failed"]
    for record in failed:
        assert record["ems"] is None and record["judged"]["mono"]["raw"] == "Examples 1 and 2"
        assert "not a comma-separated list" in record["judged"]["mono"]["error"]
        verdicts = record["judged"]["mono"]["verdicts"]       # nothing guessed: every ŷ of a failed judge is null
        assert len(verdicts) == 20 and all(v["yhat"] == [None] for v in verdicts)
    assert all(r["ems"] == 1.0 for r in experts if r not in failed)
    assert len(failed) + end["summary"]["labels"]["mono"]["judged"] == 8


def test_a_refused_key_stops_the_run_with_exit_1_and_is_never_printed(run_tool, inputs, stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    stub.faults = ["401"] * 64
    result = judge(run_tool, inputs, stub)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout
    assert not (inputs / "judged.jsonl").exists()


def test_a_killed_run_resumes_without_asking_again_what_was_answered(run_tool, inputs, stub):
    stub.faults = [None] * 5 + ["401"] * 64      # the run dies after 5 answers (a fatal error)
    assert judge(run_tool, inputs, stub, "--no-baseline", "--concurrency", "1").exit_code == 1
    assert not (inputs / "judged.jsonl").exists()
    # no request is sent once one was refused for good: the stub saw the 5 answered and the refused one,
    # each answered before the run ended (a request still in flight at the end would reach the stub late
    # and be counted with the rerun's)
    answered = 5
    assert len(stub.requests) == answered + 1
    stub.faults = []
    result = judge(run_tool, inputs, stub, "--no-baseline")
    assert result.exit_code == 0, result.stderr
    assert len(stub.requests) - (answered + 1) == 8 - answered    # only what never came back
    assert f"requests {8 - answered}, cache hits {answered}," in result.stderr


# -- bad input ----------------------------------------------------------------------------------------

def test_samples_without_holdout_or_with_overlapping_holdout_are_refused(run_tool, tmp_path, stub):
    write_labels(tmp_path / "labels.jsonl")
    write_samples(tmp_path / "samples.jsonl", holdout=False)
    result = judge(run_tool, tmp_path, stub)
    assert result.exit_code == 2 and "no holdout set" in result.stderr
    write_samples(tmp_path / "samples.jsonl", overlap=True)
    result = judge(run_tool, tmp_path, stub)
    assert result.exit_code == 2 and "also in the explain set" in result.stderr
    assert len(stub.requests) == 0


def test_labels_of_another_model_malformed_or_for_missing_experts(run_tool, inputs, stub):
    write_labels(inputs / "other.jsonl", model={**MODEL, "fingerprint": "sha256:other"})
    result = judge(run_tool, inputs, stub, labels=("other.jsonl",))
    assert result.exit_code == 2 and "another model" in result.stderr and "Traceback" not in result.stderr
    (inputs / "bad.jsonl").write_text((inputs / "labels.jsonl").read_text().replace('"layer":0,', '"layer":"x",', 1))
    result = judge(run_tool, inputs, stub, labels=("bad.jsonl",))
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    write_labels(inputs / "more.jsonl", experts=4, layers=(0, 1, 2), failed={(0, 1)})
    result = judge(run_tool, inputs, stub, "--no-baseline", labels=("more.jsonl",))
    assert result.exit_code == 0 and "4 mono labels are about experts the samples stream does not have" \
        in result.stderr
    end = json.loads((inputs / "judged.jsonl").read_text().splitlines()[-1])["summary"]["labels"]["mono"]
    assert end["labels_without_samples"] == 4 and end["labels_failed"] == 1 and end["judged"] == 7


def test_judge_flags_need_labels(run_tool, inputs):
    result = run_tool(moe_score, [str(inputs / "samples.jsonl"), "--repeats", "2", "--backend", "openai"])
    assert result.exit_code == 2 and "--backend is a judge option" in result.stderr


# -- join, EDMRS and moe-select -----------------------------------------------------------------------

def routing_scores(path) -> None:
    header = {"type": "header", "format": "moetools", "version": 1, "kind": "scores", "tool": {"name": "t"},
              "model": MODEL, "source": "routing", "layers": [0, 1], "num_experts": 4, "domains": ["code", "legal"],
              "metrics": {"af": {"scope": "domain", "definition": "000 eq. 6"}}}
    lines = [header] + [{"type": "expert", "layer": layer, "expert": e,
                         "domains": {"code": {"af": 0.1 * (e + 1)}, "legal": {"af": 0.05}}}
                        for layer in (0, 1) for e in range(4)] + [{"type": "end", "count": 8}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_join_writes_edmrs_and_moe_select_picks_by_it(run_tool, inputs, stub):
    assert judge(run_tool, inputs, stub, labels=("labels.jsonl", "code.labels.jsonl")).exit_code == 0
    routing_scores(inputs / "routing.jsonl")
    joined = inputs / "joined.jsonl"
    result = run_tool(moe_score, ["join", str(inputs / "routing.jsonl"), str(inputs / "judged.jsonl"),
                                  "-o", str(joined)])
    assert result.exit_code == 0, result.stderr
    records = records_of(joined)
    experts = {(r["layer"], r["expert"]): r for r in records if r["type"] == "expert"}
    for record in experts.values():
        code = record["domains"]["code"]
        assert code["edmrs"] == pytest.approx(code["af"] * code["edms"])          # 000 sec. 4.1
        assert code["edmrs_shuffled"] == pytest.approx(code["af"] * code["edms_shuffled"])
        assert "edmrs" not in record["domains"]["legal"]
    assert sum(r["type"] == "layer" for r in records) == 2
    out = inputs / "experts.json"
    result = run_tool(moe_select, [str(joined), "--by", "edmrs", "--domain", "code", "--top", "1", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert json.loads(out.read_text())["experts"] == {"0": [3], "1": [3]}
    result = run_tool(moe_select, [str(joined), "--by", "ems", "--threshold", "0.9", "-o", str(out), "--force"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(out.read_text())["experts"] == {"0": [0, 1, 2, 3], "1": [0, 1, 2, 3]}


# -- the offline scorer ---------------------------------------------------------------------------------

def test_embedding_scorer_ranks_code_above_legal_for_a_python_label(run_tool, inputs):
    import asyncio

    from moetools.score.judge.embedding import EmbeddingScorer, fit_threshold

    scorer = EmbeddingScorer()
    scorer.prepare()
    code = [{"pieces": ["def parse(path):\n    return open(path).read()"]},
            {"pieces": ["import os\nfor name in os.listdir('.'): print(name)"]}]
    legal = [{"pieces": ["The licensee shall indemnify the licensor against all claims."]},
             {"pieces": ["This agreement is governed by the laws of the State of New York."]}]
    sims = scorer.similarities("This expert specializes in Python source code", code + legal)
    assert min(sims[:2]) > max(sims[2:])
    assert fit_threshold([0.9, 0.8], [0.1, 0.2]) == pytest.approx(0.5)
    assert fit_threshold([0.9], []) is None
    prediction = asyncio.run(scorer.predict("This expert specializes in Python source code", code + legal,
                                            (code, legal)))
    assert prediction.chosen == [True, True, False, False]
    result = run_tool(moe_score, [str(inputs / "samples.jsonl"), "--labels", str(inputs / "labels.jsonl"),
                                  "--backend", "embedding", "-o", str(inputs / "offline.jsonl")])
    assert result.exit_code == 0, result.stderr
    assert "[embedding scorer]" in result.stderr and "Loading weights" not in result.stderr
    records = records_of(inputs / "offline.jsonl")
    header = json.loads((inputs / "offline.jsonl").read_text().splitlines()[0])
    assert header["source"] == "judged-embedding" and header["scorer"]["model"] == "all-MiniLM-L6-v2"
    experts = [r for r in records if r["type"] == "expert"]
    assert all(r["judged"]["mono"]["scorer"] == "embedding" for r in experts)
    mean = sum(r["ems"] for r in experts) / len(experts)
    assert mean >= 0.7 and mean > sum(r["ems_shuffled"] for r in experts) / len(experts)
    for record in experts:                    # each verdict: the similarity and the fitted cut-off it was cut at
        mono = record["judged"]["mono"]
        assert isinstance(mono["threshold"], float) and len(mono["verdicts"]) == 20
        for v in mono["verdicts"]:
            assert v["yhat"] == [int(v["sim"] >= mono["threshold"])]
        right = sum(v["yhat"][0] == v["y"] for v in mono["verdicts"]) / 20
        assert record["ems"] == pytest.approx(right)
