"""Input that yields nothing: one rule for every tool that reads a corpus (moetools.corpus.documents).

Empty documents are skipped, counted and named in one warning; a corpus with nothing usable left is
refused: no bytes or only empty documents is empty input (exit 3, as an empty stream is), binary data,
a moetools stream or lines that are all unusable are bad input (exit 2). moe-tune's evaluation covers
every domain of an eval file or names those it left out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cli_checks import invoke
from tests.tiny_models import save_tiny_olmoe

EXAMPLES = Path(__file__).resolve().parents[2] / "formats" / "examples"
WORDS = ["the", "a", "of", "court", "law", "judge", "patient", "dose", "fever", "code", "loop", "def"]

#: how each corpus-reading tool takes the corpus ({corpus}) and writes ({out})
TOOLS = {
    "moe-trace": ["{model}", "{corpus}", "-o", "{out}/trace.msgpack.zst"],
    "moe-eval": ["{model}", "--data", "{corpus}", "-o", "{out}/eval.jsonl"],
    "moe-tune": ["{model}", "--data", "{corpus}", "--mode", "full", "--steps", "1", "--batch-size", "2",
                 "--seq-len", "8", "-o", "{out}/tuned"],
    "moe-probe": ["neurons", "{model}", "{corpus}", "-o", "{out}/probe.jsonl"],
    "monet-train": ["--data", "{corpus}", "-o", "{out}/monet", "--steps", "1", "--batch-size", "2", "--seq-len",
                    "8", "--d-model", "16", "--layers", "1", "--heads", "2", "--moe-experts", "4", "--moe-topk",
                    "2", "--moe-dim", "4", "--moe-heads", "2", "--moe-groups", "1", "--vocab-size", "260"],
}



@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("olmoe")
    save_tiny_olmoe(directory, WORDS)
    return directory


def corpus_files(directory: Path) -> dict[str, tuple[Path, int, str]]:
    """name -> (corpus, exit code, text the one error line holds)."""
    directory.mkdir(parents=True, exist_ok=True)
    made = {}

    def put(name, data: bytes, code: int, text: str):
        path = directory / name
        path.write_bytes(data)
        made[name] = (path, code, text)

    put("empty.jsonl", b"", 3, "empty input: no documents")
    put("blank-lines.jsonl", b"\n \n\n", 3, "empty input: no documents")
    put("empty-documents.jsonl", b'{"text": ""}\n{"text": "  "}\n{"text": "\\n"}\n', 3,
        "empty input: all 3 documents have an empty 'text'")
    put("binary.bin", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(512), 2, "binary data")
    put("nul.txt", b"the court\x00\x01\x02 of law\n", 2, "binary data (a NUL byte)")
    put("trace.msgpack", (EXAMPLES / "valid" / "trace.msgpack").read_bytes(), 2, "a msgpack moetools stream")
    put("trace.msgpack.zst", (EXAMPLES / "valid" / "trace.msgpack.zst").read_bytes(), 2, "zstd-compressed data")
    made["dev-null"] = (Path(os.devnull), 3, "empty input: no documents")
    return made


#: the unusable-lines case: skip tools say "no usable documents", fail tools name the first line
NO_TEXT = b'{"body": "the court"}\n{"body": "a law"}\n'
FAIL_POLICY = {"moe-tune", "monet-train"}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_a_corpus_with_nothing_usable_is_refused_with_the_documented_code(tool, model, tmp_path):
    cases = corpus_files(tmp_path / "corpora")
    no_text = tmp_path / "corpora" / "no-text.jsonl"
    no_text.write_bytes(NO_TEXT)
    cases["no-text.jsonl"] = (no_text, 2, f"{no_text}:1: no string field 'text'" if tool in FAIL_POLICY
                              else "no usable documents in the corpus (2 lines skipped")
    failures = []
    for name, (corpus, code, text) in cases.items():
        out = tmp_path / f"out-{name}"
        out.mkdir()
        result = invoke(tool, [a.format(model=model, corpus=corpus, out=out) for a in TOOLS[tool]] + ["-q"])
        lines = result.stderr.splitlines()
        if result.exit_code != code or len(lines) != 1 or not lines[0].startswith(f"{tool}: ") \
                or text not in lines[0] or "internal error" in lines[0]:
            failures.append(f"{name}: exit {result.exit_code}, {result.stderr.strip()!r}")
        elif any(out.iterdir()):
            failures.append(f"{name}: left {sorted(p.name for p in out.iterdir())}")
    assert not failures, "\n".join(failures)


MIXED = "".join(json.dumps(line) + "\n" for line in [
    {"id": "a", "text": "the court of law", "domain": "legal"},
    {"id": "b", "text": "", "domain": "legal"},
    {"id": "c", "text": "the patient dose fever", "domain": "medical"},
    {"id": "d", "text": "   ", "domain": "medical"},
])


@pytest.mark.parametrize("tool", ["moe-trace", "moe-eval", "moe-tune", "monet-train"])
def test_empty_documents_are_skipped_counted_and_warned_once(tool, model, tmp_path):
    corpus = tmp_path / "mixed.jsonl"
    corpus.write_text(MIXED)
    args = [a.format(model=model, corpus=corpus, out=tmp_path) for a in TOOLS[tool]]
    result = invoke(tool, args + ["-q"])
    assert result.exit_code == 0, result.output
    warning = f"{tool}: warning: {corpus}: skipped 2 empty document(s) (empty 'text'); 2 document(s) read"
    if tool == "moe-trace":
        warning = warning.replace(str(corpus), corpus.name)
    assert result.stderr.splitlines().count(warning) == 1, result.stderr
    if tool == "moe-eval":
        records = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
        assert {r["domain"]: r["documents"] for r in records if r["type"] == "domain"} == {"legal": 1, "medical": 1}


def test_moe_tune_evaluates_every_domain_or_names_those_left_out(model, tmp_path):
    """An eval file of 4 domains in blocks: --eval-batches 1 x --batch-size 2 covered only the first
    domain's rows before; now the rows take the domains in turn, and what cannot be covered is named."""
    domains = {"legal": WORDS[3:6], "medical": WORDS[6:9], "code": WORDS[9:12], "general": WORDS[0:3]}
    lines = [json.dumps({"text": " ".join((words * 8)[i:i + 16]), "domain": d})
             for d, words in domains.items() for i in range(6)]
    eval_file = tmp_path / "val.jsonl"
    eval_file.write_text("\n".join(lines) + "\n")
    base = [model, "--data", eval_file, "--eval", eval_file, "--mode", "full", "--steps", "1", "--seq-len", "8",
            "--eval-every", "1"]

    def last_eval(out):
        records = [json.loads(line) for line in (out / "tune_log.jsonl").read_text().splitlines()]
        return [r for r in records if r["type"] == "eval"][-1]

    covered = invoke("moe-tune", [*base, "--batch-size", "4", "--eval-batches", "1", "-o", tmp_path / "all", "-q"])
    assert covered.exit_code == 0, covered.output
    record = last_eval(tmp_path / "all")
    assert sorted(record["eval_loss_by_domain"]) == sorted(domains) and record["eval_domains_left_out"] == []
    assert "warning" not in covered.stderr

    short = invoke("moe-tune", [*base, "--batch-size", "2", "--eval-batches", "1", "-o", tmp_path / "two", "-q"])
    assert short.exit_code == 0, short.output
    record = last_eval(tmp_path / "two")
    assert len(record["eval_loss_by_domain"]) == 2 and sorted(record["eval_domains_left_out"]) == ["code", "general"]
    assert short.stderr.count("warning: evaluation leaves out 2 of 4 domain(s) of the eval files (code, general)") == 1
