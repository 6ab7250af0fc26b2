"""An answer cut off at the token limit is asked again once with a larger one (moetools/llm/exchange.py),
for every tool that asks a model: moe-explain, the judge and moe-probe causal (all through ``ask``/``exchange``).
Against the real OpenAI-compatible server on 127.0.0.1 (tests/llm_stub.py)."""

from __future__ import annotations

import asyncio

import pytest

from moetools.llm import ResponseCache, ask, make_client, refusing_truncated
from moetools.llm.exchange import LONGEST_ANSWER, longer_limit
from moetools.score.judge.prompts import parse_answer
from tests.llm.test_openai import explain, read_labels
from tests.llm_stub import LLMStub


@pytest.fixture
def stub():
    with LLMStub() as server:
        yield server


def cut_below(limit: int, marker: str = "<< tort>>"):
    """A server rule: the answer for prompts holding ``marker`` needs ``limit`` tokens (cut off below that)."""
    return lambda body: "length" if marker in body["messages"][1]["content"] and body["max_tokens"] < limit else None


def test_limit_is_doubled_and_capped():
    assert longer_limit(40) == 80 and longer_limit(64) == 128
    assert longer_limit(700) == LONGEST_ANSWER and longer_limit(LONGEST_ANSWER) is None


def test_explain_asks_a_cut_off_answer_again_with_a_larger_limit(tmp_path, stub):
    stub.rule = cut_below(128)
    result = explain(tmp_path, stub, "--max-tokens", "64", "--attempts", "1")
    assert result.exit_code == 0, result.stderr
    _, labels, end = read_labels(tmp_path / "labels.jsonl")
    assert all(label["status"] == "ok" for label in labels)
    tort = [r["body"]["max_tokens"] for r in stub.requests if "<< tort>>" in r["body"]["messages"][1]["content"]]
    others = [r["body"]["max_tokens"] for r in stub.requests if "<< tort>>" not in r["body"]["messages"][1]["content"]]
    assert tort == [64, 128] and set(others) == {64}       # only the cut-off answer is asked again, once
    assert end["accounting"]["length_retries"] == 1 and end["accounting"]["answer_retries"] == 0
    assert next(label for label in labels if label["expert"] == 1)["usage"]["requests"] == 2
    stub.reset()   # a cut-off answer is never cached; the longer one is, under its own request
    assert explain(tmp_path, stub, "--max-tokens", "64", output="again.jsonl").exit_code == 0
    assert [r["body"]["max_tokens"] for r in stub.requests] == [64]


def test_an_answer_cut_off_at_the_larger_limit_too_is_failed_and_says_so(tmp_path, stub):
    stub.rule = cut_below(10_000)
    result = explain(tmp_path, stub, "--max-tokens", "64", "--attempts", "2")
    _, labels, end = read_labels(tmp_path / "labels.jsonl")
    failed = [label for label in labels if label["status"] == "failed"]
    assert [label["expert"] for label in failed] == [1] and "finish_reason" in failed[0]["error"]
    tort = [r["body"]["max_tokens"] for r in stub.requests if "<< tort>>" in r["body"]["messages"][1]["content"]]
    assert tort == [64, 128, 128]       # once more with room, then the second attempt keeps the larger limit
    assert end["accounting"]["length_retries"] == 1
    assert "cut off at --max-tokens 64 and again at 128" in result.stderr and "raise --max-tokens" in result.stderr


def _judge(stub, max_tokens: int, cache=None):
    """One judge exchange (paper 000 A.2 answer format) through ``ask``, as moe-score and moe-probe causal do."""
    client = make_client("openai", {"api_base": stub.url, "model": "stub-model", "max_tokens": max_tokens,
                                    "backoff_base": 0.01})
    parse = refusing_truncated(lambda text: parse_answer(text, 4), "cut off")
    messages = [{"role": "system", "content": "judge"}, {"role": "user", "content": "<< tort>> examples"}]

    async def run():
        await client.start()
        try:
            return await ask(client, messages, parse, attempts=1, cache=cache)
        finally:
            await client.aclose()

    return asyncio.run(run()), client.accounting


def test_ask_gives_every_tool_the_same_rule(stub, tmp_path):
    stub.answer = lambda body: "1, 3"
    stub.rule = cut_below(64)
    answer, accounting = _judge(stub, 32, ResponseCache(tmp_path / "cache", namespace="score"))
    assert answer.value == {1, 3} and answer.longer and answer.max_tokens == 64 and answer.attempts == 1
    assert [r["body"]["max_tokens"] for r in stub.requests] == [32, 64] and accounting.length_retries == 1
    stub.reset()
    answer, _ = _judge(stub, LONGEST_ANSWER)          # already at the cap: no larger limit to ask with
    assert answer.value == {1, 3} and not answer.longer and len(stub.requests) == 1
    stub.reset()
    stub.rule = cut_below(10_000)
    answer, _ = _judge(stub, LONGEST_ANSWER)
    assert answer.value is None and answer.kind == "length" and len(stub.requests) == 1
