"""LLM backends and explainer methods come from entry points: the built-ins and another package's alike."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.llm_stub import write_samples

ROOT = Path(__file__).resolve().parents[2]

PLUGIN = '''
from dataclasses import dataclass

from moetools.llm import Completion, CompletionClient, GenerationOptions, Usage, option


@dataclass
class EchoOptions(GenerationOptions):
    shout: bool = option(False, "answer in capitals")
    word: str = option("echoes", "what every expert specializes in")


class EchoClient(CompletionClient):
    """Answers every prompt with its own word: a backend of another package."""

    options_class = EchoOptions
    summary = "answers every prompt with --word (a third-party test backend)"

    async def complete(self, messages, *, temperature=None, max_tokens=None, answer_prefix=None):
        self.accounting.requests += 1
        if "comma-separated list of the examples" in messages[0]["content"]:   # moe-score's judge prompt
            return Completion(text="1, 2", finish_reason="stop", usage=Usage(7, 2))
        word = self.options.word.upper() if self.options.shout else self.options.word
        return Completion(text=f"This expert specializes in {word} and {len(messages)} messages.",
                          finish_reason="stop", usage=Usage(7, 5))
'''


def make_plugin_package(root: Path) -> Path:
    """A package installed the way pip lays one out: the module and a dist-info with entry_points.txt."""
    site = root / "site"
    (site / "echo_backend").mkdir(parents=True)
    (site / "echo_backend" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "echo_backend-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-backend\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[moetools.llm_backends]\necho = echo_backend:EchoClient\n")
    (info / "RECORD").write_text("")
    return site


def moe_explain(*args, site: Path | None = None, tool: str = "moe-explain"):
    env = {**os.environ, "MOETOOLS_PYTHON": sys.executable}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run([str(ROOT / "bin" / tool), *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_a_third_party_backend_is_found_by_its_entry_point(tmp_path):
    site = make_plugin_package(tmp_path)
    listing = moe_explain("--list-backends", site=site)
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"^echo \(LLM, package echo-backend\): answers every prompt", listing.stdout, re.MULTILINE)
    assert "--shout" in listing.stdout and "[default: echoes]" in listing.stdout  # its own options, declared by it
    assert "echo" not in moe_explain("--list-backends").stdout  # not installed: not there

    write_samples(tmp_path / "s.msgpack.zst", experts=3)
    result = moe_explain(tmp_path / "s.msgpack.zst", "--backend", "echo", "-O", "shout=yes", "-O", "word=loops",
                         "--cache-dir", tmp_path / "cache", "-o", tmp_path / "l.jsonl", site=site)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "l.jsonl").read_text().splitlines()]
    labels = [line for line in lines if line["type"] == "label"]
    assert [label["explanation"] for label in labels] == ["This expert specializes in LOOPS and 2 messages"] * 3
    assert labels[0]["explainer"]["backend"] == "echo" and labels[0]["usage"]["prompt_tokens"] == 7
    assert lines[-1]["accounting"]["requests"] == 3
    # an option the plugin does not declare is refused like any built-in's
    refused = moe_explain(tmp_path / "s.msgpack.zst", "--backend", "echo", "--api-base", "http://x/v1", site=site)
    assert refused.returncode == 2 and "--api-base does not apply to backend echo" in refused.stderr
    # the same backend judges labels in moe-score, with the same option names (nothing else to add)
    from tests.judge_fixture import write_labels as write_judge_labels
    from tests.judge_fixture import write_samples as write_judge_samples

    write_judge_samples(tmp_path / "j.samples.jsonl")
    write_judge_labels(tmp_path / "j.labels.jsonl")
    judged = moe_explain(tmp_path / "j.samples.jsonl", "--labels", tmp_path / "j.labels.jsonl", "--backend", "echo",
                         "-O", "word=loops", "--no-baseline", "--cache-dir", tmp_path / "cache", "-o",
                         tmp_path / "judged.jsonl", site=site, tool="moe-score")
    assert judged.returncode == 0, judged.stderr
    assert "8 judged, 0 failed" in judged.stderr and "requests 8" in judged.stderr


def test_builtins_are_declared_in_pyproject_and_listed_from_the_registry():
    from moetools.explain import backend_table
    from moetools.plugins import checkout_entry_points

    declared = {entry.name: entry.value for group in ("moetools.llm_backends", "moetools.explainers")
                for entry in checkout_entry_points(group)}
    assert declared == {"openai": "moetools.llm.openai:OpenAIClient", "local": "moetools.llm.local:LocalClient",
                        "self": "moetools.explain.self_explain:SelfExplainer",
                        "offline": "moetools.explain.offline:OfflineExplainer"}
    rows = {row["name"]: row for row in backend_table()}
    assert {name: row["kind"] for name, row in rows.items() if name in declared} == \
        {"openai": "LLM", "local": "LLM", "self": "method", "offline": "method"}
    listing = moe_explain("--list-backends")
    assert listing.returncode == 0
    for name in declared:
        assert re.search(rf"^{name} \(", listing.stdout, re.MULTILINE)
    assert "--connect-timeout" in listing.stdout and "[default: 64]" in listing.stdout


def test_llm_and_explain_do_not_import_each_other_in_a_cycle():
    """moetools.llm is the lower layer: it never imports moetools.explain (moe-score uses it the same way)."""
    for path in (ROOT / "moetools" / "llm").glob("*.py"):
        source = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+(\.\.explain|moetools\.explain)", source, re.MULTILINE), path
    code = "import sys, moetools.llm; assert not any(m.startswith('moetools.explain') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_one_exchange_for_every_tool(tmp_path):
    """moetools.llm.ask: send, parse, ask again with the reason, cache what parses, record what failed."""
    from moetools.llm import ResponseCache, ask_batch, make_client
    from tests.llm_stub import LLMStub

    def parse(completion):
        words = completion.text.split()
        return (words[1], None) if words[0] == "yes" else (None, "say yes")

    def reask(messages, text, why):
        return messages + [{"role": "assistant", "content": text}, {"role": "user", "content": why}]

    def answer(body):
        first, last = body["messages"][0]["content"], body["messages"][-1]["content"]
        return "no" if first == "shy" and last != "say yes" else "yes " + first

    with LLMStub() as stub:
        stub.rule = lambda body: "500" if body["messages"][0]["content"] == "fail" else None
        stub.answer = answer
        options = {"api_base": stub.url, "model": "stub-model", "concurrency": 4, "max_retries": 0}
        client = make_client("openai", options)
        client.prepare()
        prompts = [[{"role": "user", "content": text}] for text in ("a", "shy", "fail", "c")]
        cache = ResponseCache(tmp_path, namespace="score")
        answers = ask_batch(client, prompts, parse, attempts=2, cache=cache, reask=reask)
        assert [a.value for a in answers] == ["a", "shy", None, "c"]
        assert answers[1].attempts == 2 and answers[1].messages[-1] == {"role": "user", "content": "say yes"}
        assert answers[2].kind == "http" and answers[2].requests == 1 and "500" in answers[2].error
        assert answers[0].completion.finish_reason == "stop" and answers[0].completion_tokens == 2
        assert (client.accounting.answer_retries, client.accounting.failures, client.accounting.requests) == (1, 1, 5)
        again = make_client("openai", options)
        answers = ask_batch(again, prompts[:2], parse, attempts=2, cache=cache, reask=reask)
        assert [a.value for a in answers] == ["a", "shy"] and answers[1].cache_hits == 1
        assert again.accounting.cache_hits == 2 and again.accounting.requests == 1     # "shy"'s first answer: "no"
        assert (tmp_path / "score").is_dir()


def test_every_llm_command_takes_the_same_llm_options():
    """moe-explain, moe-score (judge) and moe-probe causal: one option bundle, the same names everywhere."""
    from moetools.cli.explain import command as explain
    from moetools.cli.llm_options import BACKEND_FLAGS, LOCAL_FLAGS
    from moetools.cli.probe import causal
    from moetools.cli.score import command as score

    common = {"--backend", "--model", "-O", "--attempts", "--cache-dir", "--no-cache", "--refresh"}
    common |= {flag for flag, *_ in BACKEND_FLAGS if flag not in LOCAL_FLAGS}
    for command in (explain, score, causal):
        flags = {name for param in command.params if not getattr(param, "hidden", False) for name in param.opts}
        assert common <= flags, (command.name, common - flags)
    hidden = {name for param in causal.params if getattr(param, "hidden", False) for name in param.opts}
    assert hidden == {"--llm-model"}
