"""Every file under formats/examples/ behaves as its manifest and README say (formats/examples/README.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from moetools import errors
from moetools.cli.cat import command as moe_cat
from moetools.streams import StreamReader

EXAMPLES = Path(__file__).resolve().parent.parent / "formats" / "examples"
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
