"""``moetools study`` on a tiny OLMoE and a held-out-style corpus (JSON lines, `body` and `topic` fields, three domains):
the whole chain into one directory, the summary, every command in study.log, and a rerun after SIGKILL that
redoes only the steps not stamped when the process died."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from moetools.cli.main import command as moetools_command
from moetools.errors import UsageError
from moetools.streams.outputs import MARKER
from moetools.study import LOG_NAME, labelling, prepare_directory
from tests.tiny_models import save_tiny_olmoe

WORDS = {"pets": ["the", "cat", "sat", "on", "a", "mat", "dog", "barked", "warm", "fire"],
         "code": ["def", "loop", "return", "value", "for", "item", "in", "list", "while", "print"],
         "medical": ["patient", "fracture", "of", "femur", "acute", "infection", "chronic", "pain", "diagnosis"]}
CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_and_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("study-inputs")
    save_tiny_olmoe(root / "olmoe", sorted({word for words in WORDS.values() for word in words}))
    rng = random.Random(0)
    with open(root / "heldout.jsonl", "w") as handle:
        for index in range(36):
            topic = list(WORDS)[index % 3]
            handle.write(json.dumps({"id": f"doc-{index}", "body": " ".join(rng.choice(WORDS[topic]) for _ in range(40)),
                                     "topic": topic}) + "\n")
    return root / "olmoe", root / "heldout.jsonl"


def study_process(model, corpus, out, *extra):
    """``moetools study`` as a user runs it, in its own process group (so a kill takes its tools too)."""
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT), "OMP_NUM_THREADS": "1"}
    env.pop("OPENAI_BASE_URL", None)
    return subprocess.Popen([sys.executable, "-m", "moetools.cli.main", "study", str(model), str(corpus),
                             "--domain-field", "topic", "--text-field", "body", "--permutations", "50", "-o", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def runs(log: Path) -> list[list[str]]:
    """The command lines of each run in study.log (a run starts with its `# moetools study` line)."""
    found = []
    for line in log.read_text().splitlines():
        if line.startswith("# moetools study "):
            found.append([])
        elif line.startswith("$ "):
            found[-1].append(line[2:])
    return found


def stamped_commands(out: Path) -> set[str]:
    return {json.loads(stamp.read_text())["command"] for stamp in out.rglob(".stamps/*.json")}


@pytest.mark.slow  # the whole chain twice on a tiny model: ~12 tool starts each
def test_study_writes_the_report_and_summary_and_a_killed_run_redoes_only_the_unfinished_steps(tmp_path,
                                                                                                model_and_corpus):
    model, corpus = model_and_corpus
    out = tmp_path / "study"
    first = study_process(model, corpus, out)
    deadline = time.monotonic() + 300
    while len(stamped_commands(out) if out.is_dir() else ()) < 2:  # moe-trace and moe-sample finished
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done_before_kill = stamped_commands(out)
    assert any(line.startswith("moe-trace ") for line in done_before_kill)

    second = study_process(model, corpus, out)  # no --force: a study directory is resumed
    stdout, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stderr
    first_run, second_run = runs(out / LOG_NAME)
    skipped = {line.split("  (up to date")[0] for line in second_run if "  (up to date" in line}
    ran = [line for line in second_run if "  (up to date" not in line]
    assert skipped == done_before_kill  # only what was stamped is skipped ...
    assert ran and not set(ran) & done_before_kill  # ... and everything else runs, once
    assert len(ran) == len(set(ran))
    for tool in ("moe-trace", "moe-sample", "moe-explain", "moe-score", "moe-select", "moe-mask", "moe-eval",
                 "moe-report"):
        assert any(line.startswith(tool + " ") for line in first_run + second_run), tool
    assert any("--labels" in line and "--backend embedding" in line for line in second_run)
    assert any("--random" in line for line in second_run)
    assert any(line.startswith("moe-trace ") and "--text-field body" in line for line in first_run)
    assert {f"moe-select -q {out / 'scores.jsonl'} --by das --domain {topic} --top 1 -o {out / 'sets' / f'{topic}.json'}"
            for topic in WORDS} <= set(first_run + second_run)
    # what the user gets
    assert (out / "report.html").read_text().count("moetools study: olmoe") >= 1
    eval_records = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert {r["domain"] for r in eval_records if r.get("type") == "domain"} == set(WORDS)
    assert "labels: offline backend" in stdout and "no LLM endpoint configured" in stdout and "OPENAI_BASE_URL" in stdout
    assert "loss change when masking each set" in stdout and f"report: {out / 'report.html'}" in stdout
    assert "not done:" not in stdout
    assert "offline backend (no LLM endpoint configured)" in (out / LOG_NAME).read_text()

    # a third run has nothing to do: every step is up to date
    third = study_process(model, corpus, out)
    third.communicate(timeout=600)
    assert third.returncode == 0 and all("  (up to date" in line for line in runs(out / LOG_NAME)[2])


def test_output_directory_rule(tmp_path):
    assert prepare_directory(tmp_path / "new", inputs=[], force=False) == "new"
    assert json.loads((tmp_path / "new" / MARKER).read_text())["tool"] == "moetools study"
    (tmp_path / "new" / "trace.msgpack.zst").write_bytes(b"x")
    assert prepare_directory(tmp_path / "new", inputs=[], force=False) == "resumed"
    assert prepare_directory(tmp_path / "new", inputs=[], force=True) == "restarted"
    assert not (tmp_path / "new" / "trace.msgpack.zst").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(UsageError, match="not written by moetools"):
            prepare_directory(foreign, inputs=[], force=force)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_backend_auto_is_offline_without_an_endpoint_and_openai_with_one(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert labelling("auto", None, None)["explain"] == "--backend offline --no-cache"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:8000/v1")
    chosen = labelling("auto", None, "qwen")
    assert chosen["explain"] == chosen["judge"] == "--backend openai --model qwen"


def test_bad_inputs_are_one_line_and_exit_2(tmp_path, model_and_corpus):
    model, corpus = model_and_corpus
    one_domain = tmp_path / "one.jsonl"
    one_domain.write_text(json.dumps({"text": "the cat", "domain": "pets"}) + "\n")
    runner = CliRunner()
    result = runner.invoke(moetools_command, ["study", str(model), str(one_domain), "-o", str(tmp_path / "s")])
    assert result.exit_code == 2 and "at least two" in result.output and "Traceback" not in result.output
    result = runner.invoke(moetools_command, ["study", str(model), str(corpus), "-o", str(tmp_path / "s")])
    assert result.exit_code == 2 and "domain(s) in field 'domain'" in result.output  # the corpus names it `topic`
    inside = model / "study"
    result = runner.invoke(moetools_command, ["study", str(model), str(corpus), "--domain-field", "topic",
                                              "-o", str(inside)])
    assert result.exit_code == 2 and not inside.exists()


def test_study_has_help_with_an_example():
    result = CliRunner().invoke(moetools_command, ["study", "--help"])
    assert result.exit_code == 0 and "moetools study models/olmoe corpus.jsonl -o study/" in result.output
