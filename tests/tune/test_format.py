"""formats/examples/tune/: every valid tune.json is accepted, every invalid one refused with its message (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moetools.errors import FormatError
from moetools.tune.adapter import read_tune_json

EXAMPLES = Path(__file__).resolve().parents[2] / "formats" / "examples" / "tune"
MANIFEST = json.loads((EXAMPLES / "manifest.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", MANIFEST["valid"])
def test_valid_tune_json_is_accepted(name):
    meta = read_tune_json(EXAMPLES / name)
    assert meta["format"] == "moe-tune-adapter"


@pytest.mark.parametrize("name,message", sorted(MANIFEST["invalid"].items()))
def test_invalid_tune_json_is_refused(name, message):
    with pytest.raises(FormatError) as raised:
        read_tune_json(EXAMPLES / name)
    assert message in str(raised.value) and raised.value.exit_code == 2


def test_every_example_is_in_the_manifest():
    on_disk = {str(p.relative_to(EXAMPLES)) for sub in ("valid", "invalid") for p in (EXAMPLES / sub).iterdir()}
    assert on_disk == set(MANIFEST["valid"]) | set(MANIFEST["invalid"])

