"""The library never imports the CLI: no module of moetools/ outside moetools/cli/ imports click or
moetools.cli, absolutely or relatively, at any depth of the file. And no package
reaches into another's privates: ``from ..other.module import _name`` (or a ``_module``) is refused
anywhere in moetools/, the CLI included; what two packages share is public in one of them.

So every tool's logic is usable from Python without click and without the CLI's global
state. A package's ``__main__.py`` (``python -m moetools.train``) is a command-line entry
point, i.e. part of the CLI layer, and is the one exception.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "moetools"
FORBIDDEN = ("click", "moetools.cli")


def library_modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py")
                  if "cli" not in path.relative_to(PACKAGE).parts[:1] and path.name != "__main__.py")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from .. import cli`` / ``from moetools import cli`` name the module in the alias
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def test_the_library_imports_neither_click_nor_the_cli():
    offences = [f"{path.relative_to(PACKAGE.parent)}:{line}: imports {module}"
                for path in library_modules() for line, module in imported_modules(path) if forbidden(module)]
    assert not offences, "the library must not import the CLI:\n" + "\n".join(offences)


def test_the_walk_sees_the_library_and_resolves_relative_imports():
    names = {module_name(path) for path in library_modules()}
    assert {"moetools.streams.files", "moetools.trace.run", "moetools.cat"} <= names
    assert not any(name.startswith("moetools.cli") for name in names)


def private_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module.name) of each private name or module ``path`` imports from another moetools package.

    A package is the first component below ``moetools`` (``moetools.train``, ``moetools.errors``); a
    private name starts with one underscore (``__version__`` is public).
    """
    def home(name: str) -> str:
        return ".".join(name.split(".")[:2])

    def private(part: str) -> bool:
        return part.startswith("_") and not part.startswith("__")

    mine = home(module_name(path))
    found = []
    for line, name in imported_modules(path):
        parts = name.split(".")
        if parts[0] == "moetools" and home(name) != mine and any(private(part) for part in parts[1:]):
            found.append((line, name))
    return found


def test_no_package_imports_another_packages_privates():
    found = [f"{path.relative_to(PACKAGE.parent).as_posix()}:{line}: {name}"
             for path in sorted(PACKAGE.rglob("*.py")) for line, name in private_imports(path)]
    assert not found, "private names imported from another package (make them public where they are, or move " \
                      "them):\n" + "\n".join(found)


@pytest.mark.parametrize("source,where,bad", [
    ("from ..train.loop import _Distributed\n", "moetools/tune/x.py", True),
    ("from ..train._state import save\n", "moetools/tune/x.py", True),
    ("from moetools.train.loop import _Distributed\n", "moetools/cli/x.py", True),
    ("from .. import _lazy\n", "moetools/tune/x.py", True),
    ("from .loop import _Distributed\n", "moetools/train/x.py", False),
    ("from ..loop import _Distributed\n", "moetools/train/sub/x.py", False),
    ("from .. import __version__\n", "moetools/tune/x.py", False),
    ("from ..train.loop import Distributed\n", "moetools/tune/x.py", False),
])
def test_the_private_import_check_catches_each_form(tmp_path, monkeypatch, source, where, bad):
    path = tmp_path / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "moetools")
    assert bool(private_imports(path)) is bad


@pytest.mark.parametrize("source,where,bad", [
    ("from ..cli.common import say\n", "moetools/trace/x.py", True),
    ("from .. import cli\n", "moetools/trace/x.py", True),
    ("from .cli import main\n", "moetools/x.py", True),
    ("import moetools.cli.common\n", "moetools/x.py", True),
    ("def f():\n    import click\n", "moetools/trace/x.py", True),
    ("from ..streams.files import open_input\n", "moetools/trace/x.py", False),
    ("from .clip import x\n", "moetools/x.py", False),
])
def test_the_checker_catches_each_form(tmp_path, monkeypatch, source, where, bad):
    root = tmp_path / "moetools"
    path = tmp_path / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", root)
    assert any(forbidden(module) for _, module in imported_modules(path)) is bad


@pytest.mark.slow  # ~35 s on 2 busy cores: a fresh interpreter imports torch and transformers
def test_moe_trace_runs_and_resumes_from_python_without_click(tmp_path):
    """The library path of moe-trace (output file, --resume, messages through callbacks) never loads click."""
    import json
    import subprocess
    import sys

    from tests.tiny_models import save_tiny_olmoe

    words = ["the", "court", "law", "patient", "cell", "code", "a", "of"]
    save_tiny_olmoe(tmp_path / "model", words)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": " ".join(words[i % 8:] + words[:i % 8])}) + "\n"
                              for i in range(6)), encoding="utf-8")
    script = f"""
import sys
from moetools.streams import StreamReader
from moetools.trace.run import run_trace
lines = []
run_trace({str(tmp_path / "model")!r}, {str(corpus)!r}, output={str(tmp_path / "t.zst")!r}, batch_size=1,
          log=lines.append, warn=lines.append)
run_trace({str(tmp_path / "model")!r}, {str(corpus)!r}, output={str(tmp_path / "t.zst")!r}, batch_size=1,
          resume=True, log=lines.append, warn=lines.append)
reader = StreamReader(open({str(tmp_path / "t.zst")!r}, "rb"), kinds="trace", validate=True)
print(len(list(reader)), reader.header["tool"]["name"])
print(lines[0].startswith("traced 6 windows"), "complete already" in lines[1])
assert "click" not in sys.modules and not any(name.startswith("moetools.cli") for name in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE.parent, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["6", "moetools.trace", "True", "True"]
