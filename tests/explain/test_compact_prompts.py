"""The compact prompt forms for small local models, against the real HTTP stub server (tests/llm_stub.py):
``moe-explain --prompt-form compact`` and ``moe-score --judge-prompt yes-no``. The papers' prompts stay the
default; the compact form is recorded in every label (``prompt.form``) and in the scores header (``scorer``)."""

from __future__ import annotations

import json
import re

import pytest

from moetools.cli.score import command as moe_score
from moetools.explain.prompts import COMPACT_EXAMPLES, COMPACT_SYSTEM, COMPACT_WINDOW, MONO_SYSTEM
from moetools.score.judge.prompts import YES_NO_SYSTEM, parse_yes_no
from moetools.streams.files import read_input
from tests.judge_fixture import write_labels
from tests.judge_fixture import write_samples as write_judge_samples
from tests.llm.test_openai import explain, read_labels
from tests.llm_stub import LLMStub


@pytest.fixture
def stub():
    with LLMStub() as server:
        yield server


def test_compact_explain_prompt_is_short_recorded_and_not_the_default(tmp_path, stub):
    result = explain(tmp_path, stub, "--prompt-form", "compact", output="compact.jsonl")
    assert result.exit_code == 0, result.stderr
    header, labels, _ = read_labels(tmp_path / "compact.jsonl")
    assert header["explain"]["prompt"] == {"kind": "mono", "domain": None, "form": "compact"}
    assert all(label["prompt"]["form"] == "compact" and label["status"] == "ok" for label in labels)
    for request in stub.requests:
        system, user = (message["content"] for message in request["body"]["messages"])
        assert system == COMPACT_SYSTEM
        examples = re.findall(r"^Example \d+: (.*)$", user, flags=re.MULTILINE)
        assert 1 <= len(examples) <= COMPACT_EXAMPLES and all("<<" in example for example in examples)
        # each example clipped to COMPACT_WINDOW pieces (the synthetic pieces are one word each)
        assert all(len(example.replace("<<", " ").replace(">>", " ").split()) <= COMPACT_WINDOW for example in examples)
    compact_tokens = sum(len(r["body"]["messages"][0]["content"]) for r in stub.requests)
    stub.reset()
    assert explain(tmp_path, stub).exit_code == 0                     # the default: the paper's P_mono, no form
    header, labels, _ = read_labels(tmp_path / "labels.jsonl")
    assert header["explain"]["prompt"] == {"kind": "mono", "domain": None} and "form" not in labels[0]["prompt"]
    assert stub.requests[0]["body"]["messages"][0]["content"] == MONO_SYSTEM
    assert compact_tokens * 4 < sum(len(r["body"]["messages"][0]["content"]) for r in stub.requests)
    # an output of one form is not continued with the other, and the compact form has no P_domain(d)
    assert explain(tmp_path, stub, "--prompt-form", "compact").exit_code == 2
    refused = explain(tmp_path, stub, "--prompt-form", "compact", "--domain", "medical", output="d.jsonl")
    assert refused.exit_code == 2 and "no P_domain(d) form" in refused.stderr


@pytest.mark.parametrize("answer, expected", [("Yes.", True), ("no", False), ('"NO" - it is code', False),
                                              ("Yes, it fits.", True), ("Maybe", None), ("", None)])
def test_yes_no_answers(answer, expected):
    assert parse_yes_no(answer)[0] is expected


def yes_when_code(body: dict) -> str:
    """A yes/no scorer that reads: yes when the label says python and the text looks like code, or neither."""
    user = body["messages"][-1]["content"]
    is_code = "python" in re.search(r"Description: (.*)", user).group(1)
    text = re.search(r"Text: (.*)", user).group(1)
    looks_code = any(token in text for token in ("def ", "import", "(", "=", "class")) and not text[:1].isupper()
    return "Yes." if looks_code == is_code else "No."


def test_yes_no_judge_asks_one_question_per_sample_and_records_the_form(run_tool, tmp_path, stub):
    write_judge_samples(tmp_path / "samples.jsonl")
    write_labels(tmp_path / "labels.jsonl")
    stub.answer = yes_when_code
    args = [str(tmp_path / "samples.jsonl"), "--labels", str(tmp_path / "labels.jsonl"), "--api-base", stub.url,
            "--model", "stub-model", "--cache-dir", str(tmp_path / "cache"), "--no-baseline", "--positives", "3",
            "--negatives", "3", "-o", str(tmp_path / "judged.jsonl"), "-O", "backoff_base=0.01"]
    result = run_tool(moe_score, [*args, "--judge-prompt", "yes-no"])
    assert result.exit_code == 0, result.stderr
    reader = read_input(str(tmp_path / "judged.jsonl"), kinds="scores", validate=True)
    header, experts = reader.header, [r for r in reader if r.get("type") == "expert"]
    assert header["scorer"]["form"] == "yes-no" and "not paper 000" in header["scorer"]["prompt"]
    assert len(experts) == 8 and all(r["ems"] == 1.0 for r in experts)     # every sample judged right
    assert len(stub.requests) == 8 * 6                                    # one question per sample
    assert all(r["body"]["messages"][0]["content"] == YES_NO_SYSTEM for r in stub.requests)
    assert all(json.dumps(r["body"]).count("Text: ") == 1 for r in stub.requests)
    # a small model goes on after its yes or no and is cut off: the first word is the answer, not asked again
    stub.reset()
    stub.rule = lambda body: "length"
    result = run_tool(moe_score, [*args, "--judge-prompt", "yes-no", "--no-cache", "-o", str(tmp_path / "cut.jsonl")])
    assert result.exit_code == 0, result.stderr
    assert len(stub.requests) == 8 * 6 and all(r["ems"] == 1.0 for r in read_input(
        str(tmp_path / "cut.jsonl"), kinds="scores") if r.get("type") == "expert")
    refused = run_tool(moe_score, [*args, "--judge-prompt", "yes-no", "--backend", "embedding"])
    assert refused.exit_code == 2
