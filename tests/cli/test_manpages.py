"""The committed man pages are what the click commands and formats/README.md render (`make man`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from moetools.cli import TOOLS, load_command
from moetools.cli.common import EXIT_STATUS_TEXT
from moetools.cli.manpage import main as write_pages
from moetools.cli.manpage import render_command, render_formats, tool_exists

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "man"
EXISTING = [name for name in TOOLS if tool_exists(name)]


@pytest.mark.parametrize("name", EXISTING)
def test_committed_page_matches_the_command(name):
    page = MAN / f"{name}.1"
    assert page.exists(), f"{page} is missing: run `make man`"
    assert page.read_text(encoding="utf-8") == render_command(name, load_command(name)), \
        f"{page} no longer matches `{name} --help`: run `make man` and commit man/"


def test_committed_formats_page_matches_formats_readme():
    assert (MAN / "moe-formats.5").read_text(encoding="utf-8") == render_formats(), \
        "man/moe-formats.5 no longer matches formats/README.md: run `make man`"


def test_moe_cat_page_has_every_section_the_exit_codes_and_the_example():
    page = render_command("moe-cat", load_command("moe-cat"))
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "EXAMPLES", "SEE ALSO"):
        assert f".SH {section}\n" in page
    for code in ("0", "1", "2", "3", "130", "141"):
        assert f".TP\n.B {code}\n" in page and code in EXIT_STATUS_TEXT
    assert "moe\\-cat trace.msgpack.zst \\-\\-head 2 \\-\\-format jsonl" in page
    assert ".B \\-\\-head N\n" in page and "moe\\-formats(5)" in page


@pytest.mark.parametrize("name", EXISTING)
def test_every_page_documents_the_exit_codes_and_the_example_of_help(name):
    """The exit-code contract and the --help example are in every tool's man page, not only moe-cat's."""
    command = load_command(name)
    page = render_command(name, command)
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "EXAMPLES"):
        assert f".SH {section}\n" in page, (name, section)
    for code in ("0", "1", "2", "3", "130", "141"):
        assert f".TP\n.B {code}\n" in page, (name, code)
    assert name in command.example  # the example runs this very tool
    examples = page.split(".SH EXAMPLES\n", 1)[1]
    assert name.replace("-", "\\-") in examples


@pytest.mark.parametrize("name", EXISTING)
def test_every_tool_has_help_with_an_example_and_a_version(name):
    from click.testing import CliRunner

    from moetools import __version__

    command = load_command(name)
    helped = CliRunner().invoke(command, ["--help"])
    assert helped.exit_code == 0 and "Example:" in helped.output
    assert command.example.splitlines()[0].strip() in helped.output
    version = CliRunner().invoke(command, ["--version"])
    assert version.exit_code == 0 and version.output == f"{name} (moetools) {__version__}\n"


def _project_scripts() -> dict:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # 3.10: the [project.scripts] table is simple `name = "module:function"` lines
        section = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL).group(1)
        return dict(re.findall(r'^([\w.-]+)\s*=\s*"([^"]+)"', section, re.MULTILINE))
    return tomllib.loads(text)["project"]["scripts"]


def test_pyproject_scripts_match_the_tools_registry():
    scripts = _project_scripts()
    assert scripts == {name: f"{module}:main" for name, module in TOOLS.items()}
    assert list(scripts) == list(TOOLS)  # the man pages' SEE ALSO lists them in this order


def test_make_man_writes_the_pages(tmp_path):
    assert write_pages([str(tmp_path)]) == 0
    written = {path.name for path in tmp_path.iterdir()}
    assert written == {f"{name}.1" for name in EXISTING} | {"moe-formats.5"}


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
@pytest.mark.parametrize("page", ["moe-cat.1", "moe-formats.5"])
def test_pages_render_without_groff_warnings(page):
    result = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN / page)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stderr == ""
