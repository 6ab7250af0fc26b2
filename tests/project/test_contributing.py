"""CONTRIBUTING.md's checklists and formats/REFERENCES.md against the tree: the files they name exist, and
the counts they state hold where a count can be read off the tree (entry points, registries, man pages, tests).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moetools.cli import TOOLS
from moetools.score.scorer import METRICS

ROOT = Path(__file__).resolve().parents[2]
CONTRIBUTING = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
REFERENCES = (ROOT / "formats" / "REFERENCES.md").read_text(encoding="utf-8")
tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11's tomllib")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
ENTRY_POINTS = PYPROJECT["project"]["entry-points"]


def _named_paths(text: str) -> set[str]:
    """Backquoted repository paths without placeholders: `moetools/...`, `tests/...`, `formats/...`, `bin/...`."""
    paths = re.findall(r"`((?:moetools|tests|formats|bin|man)/[^`<>*\s]*)`", text)
    return {path for path in paths if not path.endswith("/<") and "<" not in path}


def _module_file(target: str) -> tuple[Path, str]:
    """``package.module:Class`` -> (the module's file in the checkout, the class name)."""
    module, _, attribute = target.partition(":")
    return ROOT / (module.replace(".", "/") + ".py"), attribute


@pytest.mark.parametrize("document", ["CONTRIBUTING.md", "formats/REFERENCES.md"])
def test_every_path_a_guide_names_exists(document):
    text = CONTRIBUTING if document == "CONTRIBUTING.md" else REFERENCES
    named = _named_paths(text)
    assert len(named) >= 10, f"{document} names too few files to be a guide: {sorted(named)}"
    missing = sorted(path for path in named if not (ROOT / path.partition("::")[0]).exists())
    assert not missing, f"{document} names files that are not in the tree: {missing}"
    for path, _, function in (name.partition("::") for name in named if "::" in name):
        assert f"def {function}(" in (ROOT / path).read_text(encoding="utf-8"), f"{document}: no {path}::{function}"


def test_each_checklist_states_its_count_and_its_test():
    for heading in ("Add a model family — 2 files", "Add an LLM backend — 2 files",
                    "Add a routing metric to moe-score — 2 files", "Add a tool — 4 files"):
        assert f"## {heading}" in CONTRIBUTING
    named_tests = set(re.findall(r"tests/project/test_contributing\.py::(\w+)", CONTRIBUTING))
    defined = {name for name in globals() if name.startswith("test_")}
    assert named_tests and named_tests <= defined, f"CONTRIBUTING.md names missing tests: {named_tests - defined}"


# -- a model family: the adapter + its entry point -----------------------------------------------------------

def test_family_entry_points_name_adapter_files():
    adapters = ENTRY_POINTS["moetools.adapters"]
    assert len(adapters) >= 9
    for name, target in adapters.items():
        path, cls = _module_file(target)
        assert path.is_file(), f"adapter {name}: {path} missing"
        source = path.read_text(encoding="utf-8")
        assert re.search(rf"^class {cls}\(", source, re.MULTILINE), f"adapter {name}: no class {cls} in {path}"
        assert re.search(rf"""model_types = \([^)]*["']{name}["']""", source), \
            f"adapter {name}: {cls} does not list model_type {name!r} (the entry point's name is the model_type)"


#: where a family's own code may name it besides its adapter: MONET's modeling code and its trainer
#: (monet-train builds MONET models; it is not a family table), and the test helpers' sample headers
FAMILY_HOMES = ("moetools/models/adapters/", "moetools/models/monet/", "moetools/train/", "moetools/testing/")


def _modules_naming_a_family() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name in ENTRY_POINTS["moetools.adapters"]:
        pattern = re.compile(rf"""["']{re.escape(name)}["']""")
        for path in sorted((ROOT / "moetools").rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if not relative.startswith(FAMILY_HOMES) and pattern.search(path.read_text(encoding="utf-8")):
                found.setdefault(relative, []).append(name)
    return found


def test_only_the_adapter_names_a_family():
    found = _modules_naming_a_family()
    assert not found, f"modules outside the adapters that name a family's model_type: {found}"


# -- an LLM backend: the client + its entry point ------------------------------------------------------------

def test_backend_entry_points_name_backend_files():
    for group, base in (("moetools.llm_backends", "CompletionClient"), ("moetools.explainers", None)):
        assert ENTRY_POINTS[group], group
        for name, target in ENTRY_POINTS[group].items():
            path, cls = _module_file(target)
            assert path.is_file(), f"{group} {name}: {path} missing"
            match = re.search(rf"^class {cls}\((\w+)", path.read_text(encoding="utf-8"), re.MULTILINE)
            assert match, f"{group} {name}: no class {cls} in {path}"
            if base:
                assert match.group(1) == base, f"{group} {name}: {cls} subclasses {match.group(1)}, not {base}"


# -- a routing metric: metrics.py + scorer.py, and its line in formats/scores.md ---------------------------

def test_every_metric_is_in_the_format_page():
    page = (ROOT / "formats" / "scores.md").read_text(encoding="utf-8")
    missing = [name for name in METRICS if f"`{name}`" not in page]
    assert not missing, f"metrics moe-score computes that formats/scores.md does not define: {missing}"


# -- a tool: library, command, console script, tests (TOOLS, bin/ and the man page are derived) -------------

def _has_tests(stem: str) -> bool:
    """A tests folder ``tests/<stem>/`` (the tool's package) or a ``test_<stem>*.py`` in one (monet_train)."""
    tests = ROOT / "tests"
    return any((tests / stem).glob("test_*.py")) or any(tests.glob(f"*/test_{stem}*.py"))


def test_every_tool_has_its_files():
    from moetools.cli import load_command

    scripts = PYPROJECT["project"]["scripts"]
    assert list(scripts) == list(TOOLS), "TOOLS is read from [project.scripts]"
    for name, target in scripts.items():
        path, function = _module_file(target)
        assert function == "main" and path.is_file(), f"{name}: cli module {path} missing"
        assert path.parent == ROOT / "moetools" / "cli", f"{name}: its command is not in moetools/cli/"
        assert (ROOT / "man" / f"{name}.1").is_file(), f"{name}: man/{name}.1 missing (make man)"
        stem = path.stem
        if not _has_tests(stem):  # a group (moetools corpus|demo): a tests file per subcommand
            commands = getattr(load_command(name), "commands", {})
            homes = {sub: command.callback.__module__.rpartition(".")[2] for sub, command in commands.items()}
            uncovered = {sub: home for sub, home in homes.items() if not _has_tests(home)}
            assert commands and not uncovered, f"{name}: no tests/{stem}/test_*.py, nor for {uncovered}"
    tracked = subprocess.run(["git", "ls-files", "bin"], cwd=ROOT, capture_output=True, text=True, check=False)
    if tracked.returncode == 0:  # a git checkout: bin/ holds the one launcher, the links are made
        assert tracked.stdout.split() == ["bin/_launch"], f"bin/ files written by hand: {tracked.stdout.split()}"


#: the worked example of "Add a tool": the only files written (the man page, TOOLS and bin/ follow)
HELLO_FILES = {
    "moetools/hello/__init__.py": '''"""moe-hello's library: a greeting."""


def greet(name: str) -> str:
    """The entry point: a greeting for ``name``."""
    return f"hello, {name}"
''',
    "moetools/cli/hello.py": '''"""moe-hello: print a greeting (logic: ``moetools.hello``)."""

import click

from .common import tool

EXAMPLE = "moe-hello world"


@tool("moe-hello", example=EXAMPLE)
@click.argument("name")
def command(name):
    """Print a greeting."""
    from ..hello import greet

    click.echo(greet(name))


main = command.main
''',
    "tests/hello/test_hello.py": '''from moetools.hello import greet


def test_greet():
    assert greet("world") == "hello, world"
''',
}


def test_a_tool_is_four_files(tmp_path):
    """A copy of the checkout gains moe-hello from its 3 files and 1 pyproject line; the rest is generated."""
    checkout = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "moetools", checkout / "moetools", ignore=ignore)
    shutil.copytree(ROOT / "formats", checkout / "formats", ignore=ignore)
    (checkout / "bin").mkdir()
    shutil.copy2(ROOT / "bin" / "_launch", checkout / "bin" / "_launch")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert "\n[project.scripts]\n" in pyproject
    (checkout / "pyproject.toml").write_text(pyproject.replace(
        "\n[project.scripts]\n", '\n[project.scripts]\nmoe-hello = "moetools.cli.hello:main"\n'), encoding="utf-8")
    for relative, text in HELLO_FILES.items():
        (checkout / relative).parent.mkdir(parents=True, exist_ok=True)
        (checkout / relative).write_text(text, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(checkout), "MOETOOLS_PYTHON": sys.executable}

    def run(*command):
        done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    run(sys.executable, "-m", "moetools.cli.launchers")  # `make bin`
    assert os.readlink(checkout / "bin" / "moe-hello") == "_launch"
    assert run(str(checkout / "bin" / "moe-hello"), "world") == "hello, world\n"
    assert "moe-hello world" in run(str(checkout / "bin" / "moe-hello"), "--help")
    run(sys.executable, "-m", "moetools.cli.manpage", "man")  # `make man`
    page = (checkout / "man" / "moe-hello.1").read_text(encoding="utf-8")
    assert "Print a greeting" in page and "moe\\-hello world" in page
    assert "moe-hello" in run(sys.executable, "-c", "from moetools.cli import TOOLS; print(list(TOOLS))")
    written = set(HELLO_FILES) | {"pyproject.toml"}
    assert len(written) == 4


# -- the tests' layout: tests/<package>/test_<topic>.py, tests/project/ for the checkout as a whole ----------

#: the folders of tests that are not a moetools package: the checkout as a whole; data files
CROSS_CUTTING, DATA = "project", "fixtures"


def test_every_test_file_is_in_its_package_folder():
    """CONTRIBUTING.md's layout rule: a test file's folder is the moetools package it tests (or project/),
    no ``__init__.py`` in a folder (pytest runs in importlib mode: a tool's tests are one file), the helpers
    at the root, no name repeating its folder's package."""
    tests = ROOT / "tests"
    packages = {path.parent.name for path in (ROOT / "moetools").glob("*/__init__.py")}
    misplaced = []
    for path in sorted(tests.rglob("*.py")):
        relative = path.relative_to(tests)
        if relative.parts[0] == DATA or "__pycache__" in relative.parts:
            continue
        if len(relative.parts) == 1:  # the root: helpers, conftest.py, __init__.py; no test file
            if path.name.startswith("test_"):
                misplaced.append(f"{relative}: a test file at the root (tests/<package>/ or tests/project/)")
            continue
        folder = relative.parts[0]
        if len(relative.parts) > 2:
            misplaced.append(f"{relative}: one level only (tests/<package>/test_<topic>.py)")
        elif folder not in packages | {CROSS_CUTTING}:
            misplaced.append(f"{relative}: tests/{folder}/ is neither a moetools package nor tests/{CROSS_CUTTING}/")
        elif path.name == "__init__.py":
            misplaced.append(f"{relative}: no __init__.py in a folder (pytest's importlib mode names the module)")
        elif not path.name.startswith("test_"):
            misplaced.append(f"{relative}: a helper in a package folder (helpers live at the root of tests/)")
        elif path.name.startswith(f"test_{folder}_"):
            misplaced.append(f"{relative}: the name repeats its folder (tests/{folder}/test_<topic>.py)")
    folders = [path for path in tests.iterdir() if path.is_dir() and path.name not in (DATA, "__pycache__")]
    assert len(folders) >= 10 and not misplaced, f"tests outside the layout rule of CONTRIBUTING.md: {misplaced}"


def _entry_points() -> dict[str, list[str]]:
    """CONTRIBUTING.md's entry-point table: tool -> the ``moetools.<package>.<function>`` names of its row."""
    rows = re.findall(r"^\| `([\w-]+)` \| (.*) \|$", CONTRIBUTING, re.MULTILINE)
    return {tool: re.findall(r"`(moetools(?:\.\w+)+)`", cell) for tool, cell in rows}


def test_every_tool_follows_the_entry_point_rule():
    import importlib.util

    from moetools.cli import load_command

    table = _entry_points()
    assert list(table) == list(TOOLS), "CONTRIBUTING.md's entry-point table lists every tool, in TOOLS order"
    for tool, names in table.items():
        command_source = (ROOT / (TOOLS[tool].replace(".", "/") + ".py")).read_text(encoding="utf-8")
        for helper in re.findall(r"^from \.(\w+) import", command_source, re.MULTILINE):  # cli/score_judge.py
            if helper != "common":
                command_source += (ROOT / "moetools" / "cli" / f"{helper}.py").read_text(encoding="utf-8")
        for sub in getattr(load_command(tool), "commands", {}).values():  # a group: its subcommands' modules
            command_source += Path(sys.modules[sub.callback.__module__].__file__).read_text(encoding="utf-8")
        for dotted in names:
            if importlib.util.find_spec(dotted) is not None:  # a module (a tool's steps), not an entry point
                continue
            package, _, function = dotted.rpartition(".")
            module = importlib.import_module(package)
            entry = getattr(module, function, None)
            assert callable(entry), f"{tool}: {package} does not export {function}"
            assert function in getattr(module, "__all__", ()), f"{tool}: {function} not in {package}.__all__"
            assert re.search(rf"\b{function}\b", command_source), f"{tool}: its command does not call {function}"
            inner = re.escape(package.removeprefix("moetools")) + r"\.\w+"
            assert not re.search(rf"from \.{inner} import [^\n]*\b{function}\b", command_source), \
                f"{tool}: the command imports {function} from a module inside {package}, not from the package"


# -- the papers ---------------------------------------------------------------------------------------------

def test_every_cited_paper_is_in_the_references():
    listed = set(re.findall(r"^\| (\d{3}) \|", REFERENCES, re.MULTILINE))
    assert listed == {"000", "001", "002", "003", "004"}
    cited: set[str] = set()
    for folder in ("moetools", "tests", "bench", "formats"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".md") and path.is_file():
                text = path.read_text(encoding="utf-8")
                cited |= set(re.findall(r"[Pp]apers? (0\d\d)\b", text))
                cited |= set(re.findall(r"\[(0\d\d)(?:\]| §| eq| [A-D]\b)", text))
    assert cited and cited <= listed, f"papers cited but not in formats/REFERENCES.md: {sorted(cited - listed)}"


# -- knowledge that can be looked up: no tracker numbers, no machine paths ----------------------------------

def test_no_issue_numbers_or_machine_paths_in_the_tree():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout: nothing to list")
    # built from pieces so this file does not match itself
    issue = re.compile("issue" + r" #?\d+|\"issue\"" + r": \d+", re.IGNORECASE)
    machine = re.compile("(?<![\\w.])/(?:" + "work|home|Users" + r")/\w")
    found = []
    for name in tracked:
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".json", ".jsonl", ".sh", ".toml", ".txt", ".lock", ".1", ".5", "") \
                or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found += [f"{name}: {match.group(0)}" for pattern in (issue, machine) for match in pattern.finditer(text)]
    assert not found, f"issue numbers or machine paths (cite papers by REFERENCES.md, paths relative): {found[:10]}"
