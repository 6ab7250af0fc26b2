"""`pip install` of the repository installs the man pages where man-db finds them for a venv on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from moetools.cli import TOOLS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new venv with the repository installed by pip (a wheel build, not editable), no downloads.

    The venv sees this environment's packages (setuptools, pip, the dependencies) through a .pth file,
    as `--system-site-packages` would, so `--no-deps --no-build-isolation` needs nothing from an index.
    """
    base = tmp_path_factory.mktemp("install")
    source = base / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("moetools", "man"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "project-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                                "--no-build-isolation", "--disable-pip-version-check", "--no-index", str(source)],
                               capture_output=True, text=True, check=False, cwd=base)
    assert installed.returncode == 0, installed.stderr
    return venv


def _without_pythonpath() -> dict:
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def _man(venv: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in ("MANPATH", "MANPAGER", "PAGER")}
    environment["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    return subprocess.run(["man", *args], capture_output=True, text=True, check=False, env=environment,
                          cwd=venv.parent)


def test_pip_install_puts_every_page_under_the_venvs_share_man(fresh_venv):
    pages = {path.name for path in (fresh_venv / "share" / "man").rglob("*.*")}
    assert pages == {path.name for path in (ROOT / "man").iterdir()}
    assert {f"{name}.1" for name in TOOLS} | {"moe-formats.5"} <= pages
    assert (fresh_venv / "bin" / "moe-trace").exists()
    printed = subprocess.run([str(fresh_venv / "bin" / "python"), "-m", "moetools.cluster"], capture_output=True,
                             text=True, check=True, cwd=fresh_venv.parent, env=_without_pythonpath())  # the installed copy
    recipes = Path(printed.stdout.strip())
    assert recipes.is_relative_to(fresh_venv) and (recipes / "trace-submit.sh").exists(), recipes
    assert os.access(recipes / "trace-array.sh", os.R_OK)


@pytest.mark.skipif(shutil.which("man") is None, reason="man (Debian package man-db) not installed: `make manual`")
def test_man_finds_the_pages_with_the_venv_on_path(fresh_venv):
    for name, section in (("moe-trace", "1"), ("moetools", "1"), ("moe-formats", "5")):
        found = _man(fresh_venv, "-w", name)
        assert found.returncode == 0, found.stderr
        assert Path(found.stdout.strip()) == fresh_venv / "share" / "man" / f"man{section}" / f"{name}.{section}"


@pytest.mark.skipif(shutil.which("man") is None, reason="man (Debian package man-db) not installed: `make manual`")
def test_moetools_page_lists_every_tool(fresh_venv):
    shown = _man(fresh_venv, "-P", "cat", "moetools")
    assert shown.returncode == 0, shown.stderr
    tools = shown.stdout.split("\nTOOLS\n", 1)[1].split("\nOPTIONS\n", 1)[0]
    for name in TOOLS:
        if name != "moetools":
            assert f"{name}(1)" in tools, name
