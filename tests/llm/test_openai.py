"""moe-explain's openai backend against a real OpenAI-compatible server on 127.0.0.1 (tests/llm_stub.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from moetools.cli.explain import command
from tests.llm_stub import LLMStub, write_samples

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-test-Zq8SECRETkey1234567890"

# Paper 000, Appendix A.1.1, typed out again here (independently of moetools/explain/prompts.py)
PAPER_MONO_SYSTEM = (
    "We're studying experts in a large-scale Mixture of Experts (MoE) language model. Each expert specializes in "
    "processing certain types of content, knowledge domains, linguistic patterns, or reasoning tasks in documents. "
    "The content that activates each expert in documents is indicated with << ... >>. We will give you a list of "
    "documents on which the expert is activated by the router, in order from most strongly activating to least "
    "strongly activating. Look at the parts of the document the expert activates for and summarize in a single "
    "sentence what type of content or domain this expert specializes in. Provide a reasonable explanation that "
    "captures the key distinguishing features. Note that some experts will specialize in very specific linguistic "
    "patterns or substrings, but others will activate on broader content types provided that the text contains "
    "particular knowledge domains or reasoning patterns. Your explanation should cover the general specialization "
    "pattern across most or all activating content (for example, don't give an explanation specific to a single "
    "domain if the expert activates across multiple related areas). Pay attention to things like the subject "
    "matter, linguistic style, technical complexity, or reasoning type of the activating content, if that seems "
    "relevant. Keep the explanation as short and simple as possible, limited to 20 words or fewer. Omit "
    "punctuation and formatting. You should avoid giving long lists of specific topics. Include specific details "
    "about the semantic patterns, syntactic structures, or functional roles that characterize this expert's "
    "specialization. Mention key distinguishing features such as specific word types, grammatical constructions, "
    "or conceptual themes.\n\nYour response should be in the form \"This expert specializes in...\"")
PAPER_MEDICAL = (
    "This expert processes medical multiple-choice questions and clinical reasoning, so focus on medical "
    "terminology, diagnostic reasoning patterns, clinical decision-making, anatomical concepts, pharmacological "
    "knowledge, pathophysiology, treatment protocols, medical examination patterns, or healthcare domain "
    "knowledge.\n\n**IMPORTANT:** This expert should ONLY specialize in medical and healthcare content. Do not "
    "generate explanations about non-medical domains.\n\nYour response should be in the form \"This expert "
    "specializes in...\"\n\nSome examples: \"This expert specializes in differential diagnosis reasoning in "
    "multiple-choice contexts\", \"This expert specializes in pharmacological drug mechanism descriptions and "
    "interactions\", \"This expert specializes in anatomical structure identification and spatial relationships\", "
    "\"This expert specializes in clinical symptom pattern recognition and analysis\", \"This expert specializes "
    "in medical procedure descriptions and protocols\", \"This expert specializes in pathophysiology and disease "
    "mechanism explanations\", \"This expert specializes in medical terminology and nomenclature\", \"This expert "
    "specializes in treatment option evaluation and selection\".")

PAPER_LEGAL = (
    "This expert processes legal content and reasoning, so focus on legal terminology, case law analysis, statutory "
    "interpretation, legal argumentation patterns, contractual language, judicial reasoning, legal precedents, or "
    "jurisprudential concepts.\n\n**IMPORTANT:** This expert should ONLY specialize in legal and jurisprudence "
    "content. Do not generate explanations about non-legal domains.\n\nYour response should be in the form \"This "
    "expert specializes in...\"\n\nSome examples: \"This expert specializes in contract clause interpretation and "
    "analysis\", \"This expert specializes in case law citation and precedent application\", \"This expert "
    "specializes in statutory construction and legislative intent\", \"This expert specializes in legal doctrine "
    "and principle formulation\", \"This expert specializes in evidentiary reasoning and burden of proof\", \"This "
    "expert specializes in constitutional law interpretation\", \"This expert specializes in tort law causation "
    "analysis\", \"This expert specializes in criminal law mens rea and actus reus concepts\".")


@pytest.fixture
def stub():
    with LLMStub() as server:
        yield server


def explain(tmp_path, stub, *args, samples=None, output="labels.jsonl", env=None):
    samples = samples or tmp_path / "samples.msgpack.zst"
    if not Path(samples).exists():
        write_samples(samples, experts=6)
    arguments = [str(samples), "--api-base", stub.url, "--model", "stub-model", "--cache-dir",
                 str(tmp_path / "cache"), "--backoff-base", "0.01", "-o", str(tmp_path / output), *args]
    result = CliRunner().invoke(command, arguments, env={"OPENAI_API_KEY": SECRET, **(env or {})},
                                catch_exceptions=False)
    return result


def read_labels(path):
    lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert lines[0]["type"] == "header" and lines[-1]["type"] == "end"
    return lines[0], [line for line in lines if line["type"] == "label"], lines[-1]


def test_mono_prompt_is_the_papers_template(tmp_path, stub):
    result = explain(tmp_path, stub, "--max-examples", "3")
    assert result.exit_code == 0, result.output
    bodies = sorted((r["body"] for r in stub.requests), key=lambda b: b["messages"][1]["content"])
    assert len(bodies) == 6
    # expert 0 of layer 0 fires on " def" (tests/llm_stub.py); top contexts numbered 2,0,3,1 in the stream
    body = next(b for b in bodies if "def-" not in b["messages"][1]["content"] and "<< def>>" in
                b["messages"][1]["content"])
    assert body["model"] == "stub-model" and body["temperature"] == 0.0
    system, user = body["messages"]
    assert system == {"role": "system", "content": PAPER_MONO_SYSTEM}
    lines = user["content"].split("\n")
    assert lines[:3] == ["Here is the explanation: this expert specializes in", "", "Here are the examples:"]
    examples = lines[3:6]
    assert [line.split(":")[0] for line in examples] == ["Example 1", "Example 2", "Example 3"]
    # strongest first: context number 0 has the highest activation, then 1, then 2
    assert examples[0].startswith("Example 1: ") and examples[0].count("<< def>>") == 2
    assert lines[6:] == ["", 'Top tokens promoted by this expert (logit lens): " defs", " code", " and"']
    _, labels, end = read_labels(tmp_path / "labels.jsonl")
    assert [(l["layer"], l["expert"]) for l in labels] == [(0, e) for e in range(6)]
    assert all(l["status"] == "ok" and l["explanation"].startswith("This expert specializes in ") for l in labels)
    assert labels[0]["prompt"] == {"kind": "mono", "domain": None}
    assert labels[0]["explainer"]["backend"] == "openai" and labels[0]["explainer"]["model"] == "stub-model"
    assert labels[0]["examples"] == ["code-0-0-top-0@0", "code-0-0-top-1@0", "code-0-0-top-2@0"]
    assert end["accounting"]["requests"] == 6


def test_domain_prompt_adds_the_papers_medical_text(tmp_path, stub):
    result = explain(tmp_path, stub, "--domain", "medical", "--logit-lens-top", "0")
    assert result.exit_code == 0, result.output
    system, user = stub.requests[0]["body"]["messages"]
    assert system["content"] == PAPER_MONO_SYSTEM + "\n\n" + PAPER_MEDICAL
    assert "logit lens" not in user["content"]
    header, labels, _ = read_labels(tmp_path / "labels.jsonl")
    assert labels[0]["prompt"] == {"kind": "domain", "domain": "medical"}
    assert header["explain"]["prompt"] == {"kind": "domain", "domain": "medical"}


def test_domain_prompt_adds_the_papers_legal_text(tmp_path, stub):
    result = explain(tmp_path, stub, "--domain", "legal")
    assert result.exit_code == 0, result.output
    assert {r["body"]["messages"][0]["content"] for r in stub.requests} == {PAPER_MONO_SYSTEM + "\n\n" + PAPER_LEGAL}
    _, labels, _ = read_labels(tmp_path / "labels.jsonl")
    assert {label["prompt"]["domain"] for label in labels} == {"legal"}

def test_own_domain_from_a_file(tmp_path, stub):
    domain = tmp_path / "chemistry.json"
    domain.write_text(json.dumps({"name": "chemistry", "focus": "This expert processes chemistry.",
                                  "important": "Only chemistry.", "examples": ["This expert specializes in acids"]}))
    assert explain(tmp_path, stub, "--domain", str(domain)).exit_code == 0
    system = stub.requests[0]["body"]["messages"][0]["content"]
    assert system.endswith("This expert processes chemistry.\n\n**IMPORTANT:** Only chemistry.\n\n"
                           "Your response should be in the form \"This expert specializes in...\"\n\n"
                           "Some examples: \"This expert specializes in acids\".")


def test_concurrency_reaches_the_configured_number_in_flight(tmp_path, stub):
    stub.latency = 0.3
    write_samples(tmp_path / "many.msgpack.zst", experts=24)
    result = explain(tmp_path, stub, "--concurrency", "8", samples=tmp_path / "many.msgpack.zst")
    assert result.exit_code == 0, result.output
    assert len(stub.requests) == 24
    assert stub.max_in_flight == 8  # the server itself saw 8 at once: not one at a time (no wall clock)


def test_transient_faults_are_retried(tmp_path, stub):
    stub.retry_after = 0.4
    stub.hang = 1.5
    stub.faults = ["429", "500", "timeout", "drop", "malformed"]
    result = explain(tmp_path, stub, "--concurrency", "1", "--timeout", "0.5")
    assert result.exit_code == 0, result.output
    _, labels, end = read_labels(tmp_path / "labels.jsonl")
    assert all(label["status"] == "ok" for label in labels) and len(labels) == 6
    assert end["accounting"]["retries"] == 5 and end["accounting"]["requests"] == 11
    assert labels[0]["usage"]["requests"] == 6  # the first expert met all five faults
    # Retry-After was honoured: the retry after the 429 came at least 0.4 s later
    assert stub.requests[1]["time"] - stub.requests[0]["time"] >= 0.4
    assert "retries 5" in result.stderr


@pytest.mark.parametrize("fault", ["429", "500", "timeout", "drop", "malformed"])
def test_persistent_faults_are_reported_and_the_run_goes_on(tmp_path, stub, fault):
    stub.retry_after = 0.05
    stub.hang = 1.0
    stub.rule = lambda body: fault if "<< tort>>" in body["messages"][1]["content"] else None  # expert 1 only
    result = explain(tmp_path, stub, "--max-retries", "2", "--timeout", "0.3")
    assert result.exit_code == 0, result.output
    _, labels, end = read_labels(tmp_path / "labels.jsonl")
    failed = [label for label in labels if label["status"] == "failed"]
    assert [(label["layer"], label["expert"]) for label in failed] == [(0, 1)]
    assert failed[0]["explanation"] is None and failed[0]["usage"]["requests"] == 3
    expected = {"429": "HTTP 429", "500": "HTTP 500", "timeout": "timed out", "drop": "connection error",
                "malformed": "malformed response"}[fault]
    assert expected in failed[0]["error"]
    assert sum(label["status"] == "ok" for label in labels) == 5
    assert end["accounting"]["failures"] == 1 and "1 failed" in result.stderr and "failures" not in result.stderr


def test_malformed_answer_is_asked_again_then_recorded_raw(tmp_path, stub):
    stub.rule = lambda body: "bad_answer" if "<< tort>>" in body["messages"][1]["content"] else None
    stub.faults = [None, "bad_answer"]  # expert 1's ... and one bad answer for someone else, then a good one
    result = explain(tmp_path, stub, "--concurrency", "1", "--attempts", "3")
    assert result.exit_code == 0, result.output
    _, labels, _ = read_labels(tmp_path / "labels.jsonl")
    by_expert = {label["expert"]: label for label in labels}
    assert by_expert[1]["status"] == "failed" and by_expert[1]["explanation"] is None
    assert by_expert[1]["raw"] == "I think it is about many things." and by_expert[1]["attempts"] == 3
    assert all(by_expert[e]["status"] == "ok" for e in (0, 2, 3, 4, 5))
    retried = [r["body"] for r in stub.requests if "<< tort>>" in r["body"]["messages"][1]["content"]]
    assert len(retried) == 3 and retried[1]["temperature"] > 0  # asked again, with some sampling


def test_api_key_is_sent_but_never_written(tmp_path, stub):
    stub.rule = lambda body: "500" if "<< tort>>" in body["messages"][1]["content"] else None
    result = explain(tmp_path, stub, "-v", "--max-retries", "1", "--api-key-env", "MY_KEY",
                     env={"MY_KEY": SECRET, "OPENAI_API_KEY": None})
    assert result.exit_code == 0, result.output
    assert stub.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in result.stdout + result.stderr
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any("cache" in str(path) for path in written)
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path


def test_second_run_sends_no_request(tmp_path, stub):
    assert explain(tmp_path, stub).exit_code == 0
    first = len(stub.requests)
    stub.reset()
    result = explain(tmp_path, stub, output="again.jsonl")  # fresh output: all answers from the cache
    assert result.exit_code == 0 and len(stub.requests) == 0 and first == 6
    assert "requests 0, cache hits 6" in result.stderr
    _, a, _ = read_labels(tmp_path / "labels.jsonl")
    _, b, _ = read_labels(tmp_path / "again.jsonl")
    assert [l["explanation"] for l in a] == [l["explanation"] for l in b]
    result = explain(tmp_path, stub)  # same output: every expert already there
    assert result.exit_code == 0 and len(stub.requests) == 0 and "6 already done" in result.stderr
    _, c, _ = read_labels(tmp_path / "labels.jsonl")
    assert c == a


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_killed_run_resumes_with_only_the_missing_requests(tmp_path, stub, how):
    stub.latency = 0.25
    samples = tmp_path / "samples.msgpack.zst"
    write_samples(samples, experts=12)
    output = tmp_path / "labels.jsonl"
    arguments = [str(ROOT / "bin" / "moe-explain"), str(samples), "--api-base", stub.url, "--model", "stub-model",
                 "--cache-dir", str(tmp_path / "cache"), "--concurrency", "2", "-o", str(output)]
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "MOETOOLS_PYTHON": sys.executable}
    # SIGINT as a terminal delivers it: a test runner started in the background (`.ci/run &`) hands its children
    # SIGINT ignored, and a Python started so keeps ignoring it (as it should); the tool gets it at its default
    default_sigint = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                      "os.execv(sys.argv[1], sys.argv[1:])")
    process = subprocess.Popen([sys.executable, "-c", default_sigint, *arguments], env=env, stderr=subprocess.PIPE)
    partial = tmp_path / "labels.jsonl.partial"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if partial.exists() and partial.read_text().count('"type":"label"') >= 4:
            break
        time.sleep(0.02)
    process.send_signal(how)
    code = process.wait()
    assert code == (130 if how == signal.SIGINT else -signal.SIGKILL)
    assert not output.exists() and partial.exists()
    cached = {json.dumps(json.loads(p.read_text())["request"]["messages"]) for p in (tmp_path / "cache").rglob("*.json")}
    first_prompts = [json.dumps(r["body"]["messages"]) for r in stub.requests]
    assert 4 <= len(cached) < 12
    stub.reset()
    result = explain(tmp_path, stub, "--concurrency", "2", samples=samples)
    assert result.exit_code == 0, result.output
    second_prompts = [json.dumps(r["body"]["messages"]) for r in stub.requests]
    assert len(second_prompts) == 12 - len(cached)           # only what had no answer yet
    assert not set(second_prompts) & cached                 # nothing answered before is asked again
    assert len(set(first_prompts) | set(second_prompts)) == 12
    _, labels, _ = read_labels(output)
    assert sorted(label["expert"] for label in labels) == list(range(12))
    assert all(label["status"] == "ok" for label in labels)


class ManualClock:
    """A rate limiter's clock that stands still: every wait it asks for is recorded, none is slept."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        import asyncio

        self.sleeps.append(seconds)
        await asyncio.sleep(0)


def test_rate_limit_schedules_request_starts_one_interval_apart():
    import asyncio

    from moetools.llm.openai import RateLimiter

    clock = ManualClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)

    async def six():
        return await asyncio.gather(*(limiter.wait() for _ in range(6)))

    assert asyncio.run(six()) == pytest.approx([0.0, 0.05, 0.10, 0.15, 0.20, 0.25])
    assert clock.sleeps == pytest.approx([0.05, 0.10, 0.15, 0.20, 0.25])     # the first starts at once
    clock.now = 10.0                                  # after a quiet spell the next request starts at once
    assert asyncio.run(six())[0] == 10.0
    assert asyncio.run(RateLimiter(0, clock=clock, sleep=clock.sleep).wait()) is None


def test_rate_limit_spaces_request_starts(tmp_path, stub):
    # every request of a real run (retries included) waits for its turn on the limiter's own clock
    from moetools.llm import ask_batch, make_client
    from moetools.llm.openai import RateLimiter

    assert explain(tmp_path, stub, "--rate", "20", "--concurrency", "6").exit_code == 0
    client = make_client("openai", {"api_base": stub.url, "model": "stub-model", "rate": 20, "concurrency": 6,
                                    "backoff_base": 0.0})
    assert client.limiter.interval == pytest.approx(1 / 20)
    clock = ManualClock()
    client.limiter = RateLimiter(client.options.rate, clock=clock, sleep=clock.sleep)
    stub.faults = [None] * 3 + ["500"]
    answers = ask_batch(client, [[{"role": "user", "content": f"<<w{i}>>"}] for i in range(6)],
                        lambda completion: (completion.text, None))
    assert all(answer.ok for answer in answers)
    assert client.accounting.requests == 7 and client.accounting.retries == 1
    assert clock.sleeps == pytest.approx([0.05 * i for i in range(1, 7)])


def test_refused_key_stops_the_run(tmp_path, stub):
    # every other expert would fail the same way: the run stops (exit 1) and leaves no complete output
    stub.rule = lambda body: "401"
    result = explain(tmp_path, stub)
    assert result.exit_code == 1
    assert "401" in result.stderr and SECRET not in result.stdout + result.stderr
    assert not (tmp_path / "labels.jsonl").exists()
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes()


def test_samples_written_by_moe_sample(tmp_path, stub):
    # the format's own example (formats/examples/samples, made by moe-sample from a trace)
    samples = ROOT / "formats" / "examples" / "samples" / "samples.jsonl"
    result = explain(tmp_path, stub, samples=samples)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    experts = [r for r in records if r["type"] == "expert"]
    _, labels, _ = read_labels(tmp_path / "labels.jsonl")
    assert [(l["layer"], l["expert"]) for l in labels] == [(r["layer"], r["expert"]) for r in experts]
    for label, record, request in zip(labels, experts, sorted(stub.requests, key=lambda r: r["time"])):
        shown = {c["id"] for c in record["explain"]["top"] + record["explain"]["weighted"]}
        assert set(label["examples"]) <= shown and label["examples"]
        assert not set(label["examples"]) & {c["id"] for c in record["holdout"]["positive"]}
    assert all("<<" in r["body"]["messages"][1]["content"] for r in stub.requests)


def test_backoff_is_exponential_with_jitter_capped_and_honours_retry_after():
    import email.utils
    import random

    from moetools.llm.openai import backoff_seconds, retry_after_seconds

    random.seed(0)
    for attempt in range(6):
        delays = [backoff_seconds(attempt, 0.5, 4.0) for _ in range(200)]
        ceiling = min(4.0, 0.5 * 2 ** attempt)
        assert all(ceiling / 2 <= d <= ceiling for d in delays)      # doubling, capped at 4 s
        assert len(set(delays)) > 100 and max(delays) - min(delays) > ceiling / 4  # jittered, not in lockstep
    assert backoff_seconds(0, 0.5, 4.0, retry_after=3.0) == 3.0      # never sooner than the server asked
    assert retry_after_seconds("2") == 2.0 and retry_after_seconds(" 0.5 ") == 0.5
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    now = 1_800_000_000.0  # the HTTP-date form, measured from a given clock
    assert retry_after_seconds(email.utils.formatdate(now + 10, usegmt=True), now=now) == 10.0
    assert retry_after_seconds(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0


# -- a real server as a new user meets it ------------------------------------------------

def test_answer_cut_off_by_max_tokens_is_not_a_label(tmp_path, stub):
    stub.rule = lambda body: "length" if "<< tort>>" in body["messages"][1]["content"] else None
    result = explain(tmp_path, stub, "--attempts", "2")
    _, labels, _ = read_labels(tmp_path / "labels.jsonl")
    failed = [label for label in labels if label["status"] == "failed"]
    assert [label["expert"] for label in failed] == [1]
    assert "finish_reason" in failed[0]["error"] and failed[0]["attempts"] == 2
    assert "raise --max-tokens" in result.stderr


def test_an_answer_that_is_not_a_label_is_not_served_from_the_cache(tmp_path, stub):
    stub.rule = lambda body: "bad_answer" if "<< tort>>" in body["messages"][1]["content"] else None
    assert explain(tmp_path, stub, "--attempts", "1").exit_code == 0
    _, labels, _ = read_labels(tmp_path / "labels.jsonl")
    assert [label["expert"] for label in labels if label["status"] == "failed"] == [1]
    stub.reset()
    stub.rule = None  # the server answers properly now: the rerun asks again, only for expert 1
    result = explain(tmp_path, stub, "--attempts", "1")
    assert result.exit_code == 0 and len(stub.requests) == 1, result.stderr
    _, labels, _ = read_labels(tmp_path / "labels.jsonl")
    assert all(label["status"] == "ok" for label in labels) and len(labels) == 6
    stub.reset()  # and on a fresh output, every answer comes from the cache
    result = explain(tmp_path, stub, output="again.jsonl")
    assert result.exit_code == 0 and len(stub.requests) == 0 and "cache hits 6" in result.stderr


def _explain_without_model(tmp_path, stub, *args):
    write_samples(tmp_path / "samples.msgpack.zst", experts=2)
    arguments = [str(tmp_path / "samples.msgpack.zst"), "--api-base", stub.url, "--cache-dir",
                 str(tmp_path / "cache"), "-o", str(tmp_path / "labels.jsonl"), *args]
    return CliRunner().invoke(command, arguments, env={"OPENAI_API_KEY": SECRET}, catch_exceptions=False)


def test_model_comes_from_the_server_when_it_serves_exactly_one(tmp_path, stub):
    stub.models = ["smollm2-135m-instruct"]
    result = _explain_without_model(tmp_path, stub)
    assert result.exit_code == 0, result.stderr
    assert {r["body"]["model"] for r in stub.requests} == {"smollm2-135m-instruct"}
    header, labels, _ = read_labels(tmp_path / "labels.jsonl")
    assert header["explain"]["explainer"]["model"] == "smollm2-135m-instruct"
    assert all(label["explainer"]["model"] == "smollm2-135m-instruct" for label in labels)


@pytest.mark.parametrize("models", [["a", "b"], []])
def test_model_is_required_with_api_base_otherwise(tmp_path, stub, models):
    stub.models = models
    result = _explain_without_model(tmp_path, stub)
    assert result.exit_code == 2 and "--model is required with --api-base" in result.stderr
    assert not stub.requests and not (tmp_path / "labels.jsonl").exists()


def test_cache_key_includes_the_endpoint(tmp_path, stub):
    assert explain(tmp_path, stub).exit_code == 0 and len(stub.requests) == 6
    with LLMStub() as other:  # another server, the same model name: its answers are its own
        other.answer = lambda body: "This expert specializes in legal citations."
        result = explain(tmp_path, other, output="other.jsonl")
        assert result.exit_code == 0 and len(other.requests) == 6 and "cache hits 0" in result.stderr
    _, labels, _ = read_labels(tmp_path / "other.jsonl")
    assert {label["explanation"] for label in labels} == {"This expert specializes in legal citations"}
    entry = json.loads(next((tmp_path / "cache").rglob("*.json")).read_text())
    assert entry["request"]["client"]["endpoint"] in (stub.url, other.url)
    assert entry["request"]["client"]["model"] == "stub-model"


def test_bad_api_base_is_a_usage_error_before_any_work(tmp_path, stub):
    result = explain(tmp_path, stub, "--api-base", "localhost:8000")  # the later flag wins
    assert result.exit_code == 2 and "is not an http(s) URL" in result.stderr
    assert not stub.requests and not list(tmp_path.glob("labels.jsonl*"))


def test_unreachable_server_fails_before_any_work(tmp_path, stub):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = explain(tmp_path, stub, "--api-base", f"http://127.0.0.1:{port}/v1")
    assert result.exit_code == 1 and "cannot reach" in result.stderr
    assert not list(tmp_path.glob("labels.jsonl*"))  # refused at the models check, before any output


def test_exit_1_when_no_expert_was_labelled_and_with_strict_when_some_failed(tmp_path, stub):
    stub.rule = lambda body: "500"
    result = explain(tmp_path, stub, "--max-retries", "0")
    assert result.exit_code == 1 and "no expert was labelled (6 failed)" in result.stderr
    _, labels, end = read_labels(tmp_path / "labels.jsonl")  # the failures are still recorded, end record included
    assert len(labels) == 6 and end["accounting"]["failures"] == 6
    stub.rule = lambda body: "500" if "<< tort>>" in body["messages"][1]["content"] else None
    assert explain(tmp_path, stub, "--max-retries", "0", output="some.jsonl").exit_code == 0
    result = explain(tmp_path, stub, "--max-retries", "0", "--strict", output="strict.jsonl")
    assert result.exit_code == 1 and "1 experts failed (--strict)" in result.stderr


def test_a_server_with_one_slot_and_more_requests_than_it_can_take_in_time(tmp_path):
    """llama.cpp's server works on one request at a time: queued requests must not time out in a loop."""
    with LLMStub(latency=0.3, slots=1) as slow:
        result = explain(tmp_path, slow, "--concurrency", "6", "--timeout", "1.0")
        assert result.exit_code == 0, result.stderr
        _, labels, end = read_labels(tmp_path / "labels.jsonl")
        assert all(label["status"] == "ok" for label in labels)
        # the first timeouts halve the requests in flight, so few requests are ever repeated
        assert end["accounting"]["requests"] <= 12, end["accounting"]


def test_a_server_slower_than_the_timeout_gets_advice_that_says_what_to_change(tmp_path):
    write_samples(tmp_path / "samples.msgpack.zst", experts=2)
    with LLMStub(latency=0.6, slots=1) as slow:
        result = explain(tmp_path, slow, "--concurrency", "2", "--timeout", "0.2", "--max-retries", "1")
    assert result.exit_code == 1
    assert "the server answers slower than --timeout 0.2 s; try --concurrency 1 --timeout 300" in result.stderr
    _, labels, _ = read_labels(tmp_path / "labels.jsonl")
    assert all("timed out after 0.2 s waiting for an answer" in label["error"] for label in labels)


def test_continue_final_message_sends_the_answers_start(tmp_path, stub):
    def continuation(body):
        last = body["messages"][-1]
        assert last == {"role": "assistant", "content": "This expert specializes in"}
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
        return " Python keywords and their indentation."

    stub.answer = continuation
    result = explain(tmp_path, stub, "-O", "continue_final_message=true")
    assert result.exit_code == 0, result.stderr
    _, labels, _ = read_labels(tmp_path / "labels.jsonl")
    assert {label["explanation"] for label in labels} == \
        {"This expert specializes in Python keywords and their indentation"}
