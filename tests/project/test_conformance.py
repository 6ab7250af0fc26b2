"""Every file under formats/examples/ behaves as its manifest and README say (formats/examples/README.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from moetools import errors
from moetools.cli.cat import command as moe_cat
from moetools.streams import StreamReader

EXAMPLES = Path(__file__).resolve().parents[2] / "formats" / "examples"
MANIFEST = json.loads((EXAMPLES / "manifest.json").read_text(encoding="utf-8"))


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", [name for name, entry in MANIFEST.items() if entry["valid"]])
def test_valid_files_are_read_as_documented(name, run_tool):
    entry = MANIFEST[name]
    with open(EXAMPLES / name, "rb") as source:
        reader = StreamReader(source)
        records = list(reader)
    assert len(records) == entry["records"] and len(reader.headers) == entry["segments"] == len(reader.ends)
    assert reader.header["kind"] == entry["kind"]
    result = run_tool(moe_cat, ["--check", str(EXAMPLES / name)])
    assert (result.exit_code, result.stderr) == (0, "")


@pytest.mark.parametrize("name", [name for name, entry in MANIFEST.items() if not entry["valid"]])
def test_invalid_files_are_refused_with_the_documented_error(name, run_tool):
    entry = MANIFEST[name]
    expected = getattr(errors, entry["error"])
    with open(EXAMPLES / name, "rb") as source, pytest.raises(errors.FormatError) as raised:
        list(StreamReader(source))
    assert type(raised.value) is expected and entry["message"] in str(raised.value)
    assert raised.value.exit_code == entry["exit"]
    result = run_tool(moe_cat, ["--check", str(EXAMPLES / name)])
    assert result.exit_code == entry["exit"]
    assert result.stderr.startswith(f"moe-cat: {EXAMPLES / name}: ") and result.stderr.count("\n") == 1
    assert entry["message"] in result.stderr and "Traceback" not in result.stderr


def test_every_example_file_is_documented_and_the_readme_matches_the_manifest():
    on_disk = {str(path.relative_to(EXAMPLES)) for sub in ("valid", "invalid") for path in (EXAMPLES / sub).iterdir()}
    assert on_disk == set(MANIFEST)
    generator = _load_generator()
    assert (EXAMPLES / "README.md").read_text(encoding="utf-8") == generator.render_readme(MANIFEST)


def test_the_generator_reproduces_the_committed_files(tmp_path):
    _load_generator().main([str(tmp_path)])
    assert json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8")) == MANIFEST
    for name in MANIFEST:
        if ".zst" not in name:  # zstd bytes may differ between zstandard versions; their content is tested above
            assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), name


# -- hand-written files: the fields of each kind (formats/<kind>.md), one schema, every consumer ----------

HAND_KINDS = ("trace", "samples", "labels")


def _hand_manifest(kind: str) -> dict:
    return json.loads((EXAMPLES / kind / "hand-written" / "manifest.json").read_text(encoding="utf-8"))


HAND = [(kind, name) for kind in HAND_KINDS for name in _hand_manifest(kind)]


def _message(result, path: Path, tool: str) -> str:
    """The one stderr line of a refusal, without the ``tool: path: `` prefix."""
    prefix = f"{tool}: {path}: "
    assert result.stderr.startswith(prefix) and result.stderr.count("\n") == 1, result.stderr
    return result.stderr[len(prefix):].rstrip("\n")


@pytest.mark.parametrize("kind", HAND_KINDS)
def test_hand_written_files_are_all_listed_and_described(kind):
    folder = EXAMPLES / kind / "hand-written"
    manifest = _hand_manifest(kind)
    on_disk = {str(path.relative_to(folder)) for sub in ("valid", "invalid") for path in (folder / sub).iterdir()}
    assert on_disk == set(manifest)
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in readme for name in manifest)
    assert {entry["valid"] for entry in manifest.values()} == {True, False}


@pytest.mark.parametrize("kind,name", HAND)
def test_hand_written_files_pass_or_fail_the_schema_and_moe_cat_check(kind, name, run_tool):
    entry, path = _hand_manifest(kind)[name], EXAMPLES / kind / "hand-written" / name
    with open(path, "rb") as source:
        framed = list(StreamReader(source))  # every file is a valid container: only a field is wrong
    result = run_tool(moe_cat, ["--check", str(path)])

    def read_validated():
        with open(path, "rb") as source:
            return list(StreamReader(source, kinds=kind, validate=True))

    if entry["valid"]:
        assert len(read_validated()) == len(framed) == entry["records"]
        assert (result.exit_code, result.stderr) == (0, "")
        return
    with pytest.raises(errors.FormatError) as raised:
        read_validated()
    assert type(raised.value) is errors.FormatError and entry["message"] in str(raised.value)
    assert result.exit_code == entry["exit"] == 2
    assert _message(result, path, "moe-cat") == str(raised.value)  # moe-cat --check says what the schema says


@pytest.mark.parametrize("name", list(_hand_manifest("trace")))
def test_moe_sample_refuses_what_the_trace_schema_refuses_with_the_same_message(name, run_tool, tmp_path):
    from moetools.cli.sample import command as moe_sample

    entry, path = _hand_manifest("trace")[name], EXAMPLES / "trace" / "hand-written" / name
    out = tmp_path / "samples.jsonl"
    result = run_tool(moe_sample, ["-q", "--format", "jsonl", "--context", "2", "--split-region", "2", str(path),
                                   "-o", str(out)])
    if entry["valid"]:
        assert result.exit_code == 0, result.stderr
        with open(out, "rb") as made:
            experts = json.loads(path.read_text().splitlines()[0])["num_experts"]  # a record per expert
            assert [r["layer"] for r in StreamReader(made, kinds="samples", validate=True)] == [0] * experts + [1] * experts
        return
    assert result.exit_code == 2 and not out.exists()
    checked = run_tool(moe_cat, ["--check", str(path)])
    assert _message(result, path, "moe-sample") == _message(checked, path, "moe-cat")


def test_the_sampler_from_python_refuses_signed_expert_ids_like_the_reader():
    from moetools.sample import SampleOptions, Sampler
    from moetools.trace.validate import check_sequence

    with open(EXAMPLES / "trace" / "hand-written" / "invalid" / "signed-expert-ids.jsonl", "rb") as source:
        reader = StreamReader(source)
        (record,) = list(reader)
    sampler = Sampler(reader.header, SampleOptions())
    with pytest.raises(errors.FormatError, match="expert ids are unsigned") as from_sampler:
        sampler.feed(record, 1)
    with pytest.raises(errors.FormatError) as from_check:
        check_sequence(record, reader.header, 1)
    assert str(from_sampler.value) == str(from_check.value)


@pytest.mark.parametrize("name", list(_hand_manifest("samples")))
def test_moe_explain_refuses_what_the_samples_schema_refuses_with_the_same_message(name, run_tool, tmp_path):
    from moetools.cli.explain import command as moe_explain

    entry, path = _hand_manifest("samples")[name], EXAMPLES / "samples" / "hand-written" / name
    out = tmp_path / "labels.jsonl"
    result = run_tool(moe_explain, ["-q", "--backend", "offline", "--no-cache", str(path), "-o", str(out)])
    if entry["valid"]:  # read and labelled; the offline method may find no token seen 3 times (failed, exit 1)
        assert out.exists() and (result.exit_code == 0 or "no expert was labelled" in result.stderr), result.stderr
        return
    assert result.exit_code == 2 and not out.exists()
    checked = run_tool(moe_cat, ["--check", str(path)])
    assert _message(result, path, "moe-explain") == _message(checked, path, "moe-cat")


def test_a_trace_with_signed_expert_ids_is_refused_by_every_consumer(run_tool, tmp_path):
    """The issue's case: `|i1` expert ids, exit 2 from moe-sample and moe-cat --check (one message), and
    from moe-explain (which reads samples, not traces)."""
    from moetools.cli.explain import command as moe_explain
    from moetools.cli.sample import command as moe_sample

    path = EXAMPLES / "trace" / "hand-written" / "invalid" / "signed-expert-ids.jsonl"
    sampled = run_tool(moe_sample, ["-q", str(path), "-o", str(tmp_path / "s")])
    checked = run_tool(moe_cat, ["--check", str(path)])
    explained = run_tool(moe_explain, ["-q", "--backend", "offline", "--no-cache", str(path)])
    assert sampled.exit_code == checked.exit_code == explained.exit_code == 2
    assert "expert ids are unsigned" in sampled.stderr
    assert _message(sampled, path, "moe-sample") == _message(checked, path, "moe-cat")
    assert "expected a samples stream, got a trace stream" in explained.stderr


# -- hand-written moe_mask records (formats/mask.md): what a loader of masked directories reads or refuses --------

MASK_EXAMPLES = EXAMPLES / "mask" / "hand-written"
MASK_MANIFEST = json.loads((MASK_EXAMPLES / "manifest.json").read_text(encoding="utf-8"))


def test_mask_records_are_all_listed_and_described():
    on_disk = {str(path.relative_to(MASK_EXAMPLES)) for sub in ("valid", "invalid") for path in (MASK_EXAMPLES / sub).iterdir()}
    assert on_disk == set(MASK_MANIFEST)
    readme = (MASK_EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in readme for name in MASK_MANIFEST)
    assert {entry["valid"] for entry in MASK_MANIFEST.values()} == {True, False}


@pytest.mark.parametrize("name", list(MASK_MANIFEST))
def test_mask_records_are_read_or_refused_as_documented(name, tmp_path):
    from moetools.eval.run import load_for_eval
    from moetools.mask.directory import mask_record_problem
    from moetools.mask.routing import routing_problem

    entry, record = MASK_MANIFEST[name], json.loads((MASK_EXAMPLES / name).read_text(encoding="utf-8"))
    problem = mask_record_problem(record)
    if entry["valid"]:
        assert problem is None
        if "routing" in record:  # what the routing code shipped in a remote directory computes
            assert routing_problem(record["routing"]) is None
        return
    assert problem is not None and entry["message"] in problem
    directory = tmp_path / "masked"  # the loader refuses it before reading any weight
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": record["family"], "moe_mask": record}))
    with pytest.raises(errors.ModelError) as raised:
        load_for_eval(directory)
    assert str(raised.value) == f"{directory}: {problem}" and raised.value.exit_code == entry["exit"] == 2
