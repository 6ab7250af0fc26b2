"""moetools from Python: the README's Python block and examples/study.ipynb run; the API is one list.

nbclient is not among the project's dependencies: the notebook's code cells run in order in one
namespace, as a kernel would run them (with nbclient installed, the notebook is executed by it too).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import moetools
from tests.tiny_models import save_tiny_olmoe

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
NOTEBOOK = REPO / "examples" / "study.ipynb"
WORDS = ["the", "a", "of", "to", "and", "in", "is", "it", "that", "for", "on", "with", "code", "law", "math", "cell",
         "patient", "court", "theorem", "model"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """model/ (a tiny random OLMoE and a word-level tokenizer) and corpus.jsonl with two domains."""
    root = tmp_path_factory.mktemp("python-api")
    save_tiny_olmoe(root / "model", WORDS)
    rng = np.random.default_rng(0)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for number in range(16):
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(20, 60))))
            handle.write(json.dumps({"id": f"doc{number}", "text": text, "domain": ["law", "med"][number % 2]}) + "\n")
    return root


def python_block() -> str:
    blocks = re.findall(r"<!-- tested: python -->\n```python\n(.*?)```", README, flags=re.DOTALL)
    assert len(blocks) == 1
    return blocks[0]


def test_readme_python_block_runs(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    namespace: dict = {}
    exec(compile(python_block(), "README.md (From Python)", "exec"), namespace)  # noqa: S102
    routing, scores = namespace["routing"], namespace["scores"]
    assert namespace["trace"] == Path("trace.msgpack.zst") and (workdir / "trace.msgpack.zst").exists()
    assert namespace["first"]["experts"].shape[0] == len(routing.layers) == 2
    tokens = len(routing.tokens)
    assert routing.experts.shape == (2, tokens, 2) and routing.gates.dtype == np.float32
    assert namespace["load"].sum() == tokens * 2  # every token fills top-2 slots in every layer
    assert len(routing.documents) == tokens and set(routing.documents) == {f"doc{n}" for n in range(16)}
    assert len(scores) == 2 * 8 * 2 and set(scores["domain"]) == {"law", "med"}  # layers x experts x domains
    assert list(namespace["law"]["das"]) == sorted(namespace["law"]["das"], reverse=True)
    chosen = json.loads((workdir / "law.json").read_text())
    assert sum(len(ids) for ids in chosen["experts"].values()) == 2 * 2  # --top is per layer
    assert [(r["model"], r["domain"]) for r in namespace["losses"]] == [(0, "law"), (0, "med"), (1, "law"), (1, "med")]
    assert namespace["losses"][2]["delta_loss"] == pytest.approx(namespace["losses"][2]["loss"] -
                                                                namespace["losses"][0]["loss"])


def test_routing_arrays_are_the_trace_records(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    trace = moetools.trace("model/", "corpus.jsonl", output="small.msgpack.zst", max_length=16)
    routing = moetools.routing(trace)
    with moetools.open(trace) as stream:
        records = list(stream)
        assert stream.header["kind"] == "trace" and stream.ends[0]["tokens"] == len(routing.tokens)
    start = 0
    for index, record in enumerate(records):
        length = len(record["tokens"])
        assert np.array_equal(routing.layer(1)["experts"][start:start + length], record["experts"][1])
        assert np.array_equal(routing.window_of[start:start + length], np.full(length, index))
        start += length
    with pytest.raises(KeyError, match="layer 5"):
        routing.layer(5)


def test_scores_table_without_pandas_is_a_dict_of_numpy_columns(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    scores = moetools.score(["small.msgpack.zst"] if (workdir / "small.msgpack.zst").exists() else
                            [moetools.trace("model/", "corpus.jsonl", output="small.msgpack.zst", max_length=16)],
                            output="small.scores.jsonl", fmt="jsonl", permutations=0)
    frame = moetools.scores_table(scores)
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    table = moetools.scores_table(scores)
    assert isinstance(table, dict) and set(table) == set(frame.columns)
    assert table["layer"].dtype == np.int64 and table["das"].dtype == np.float64
    assert np.allclose(table["das"], frame["das"].to_numpy(), equal_nan=True)
    assert list(table["domain"]) == list(frame["domain"]) and "skew_ratio" in table


def test_the_api_is_listed_once_and_every_function_has_a_docstring_with_an_example():
    public = [name for name in moetools.__all__ if name != "__version__"]
    for name in public:
        value = getattr(moetools, name)
        assert value.__module__ == "moetools.api", name
        assert ">>>" in (inspect.getdoc(value) or "") or inspect.isclass(value), name
    tools = {name for name in public if inspect.isfunction(getattr(moetools, name))} - {"open", "routing", "scores_table"}
    from moetools.cli import TOOLS

    expected = {name.removeprefix("moe-") for name in TOOLS if name.startswith("moe-")} - {"cat", "eval", "probe"}
    assert tools == expected | {"evaluate", "merge"}


def test_importing_a_subpackage_keeps_the_api_function():
    for name in ("trace", "sample", "score", "select", "mask", "tune", "report", "explain"):
        module = importlib.import_module(f"moetools.{name}")
        assert inspect.ismodule(module) and inspect.isfunction(getattr(moetools, name)), name


def test_import_moetools_stays_light():
    probe = "import sys, moetools; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'numpy'}))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.strip() == "[]"


def test_a_bad_option_is_a_usage_error_not_a_traceback_deep_inside(workdir):
    from moetools.errors import UsageError

    with pytest.raises(UsageError):
        moetools.select(workdir / "nothing.jsonl", output=workdir / "x.json", by="das", top=2, bottom=2)
    with pytest.raises(TypeError, match="no_such_option"):
        moetools.sample(workdir / "small.msgpack.zst", output=workdir / "s.msgpack.zst", no_such_option=1)


@pytest.mark.slow  # the notebook's whole study: trace, score, two masks, eval of three models, report
def test_the_study_notebook_runs(workdir, monkeypatch, tmp_path):
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    monkeypatch.setenv("STUDY_MODEL", str(workdir / "model"))
    monkeypatch.setenv("STUDY_CORPUS", str(workdir / "corpus.jsonl"))
    monkeypatch.setenv("STUDY_OUT", str(tmp_path / "study"))
    monkeypatch.chdir(tmp_path)
    try:
        import nbclient
        import nbformat
    except ImportError:  # not a dependency: the cells in order in one namespace, as the kernel runs them
        namespace: dict = {}
        for number, cell in enumerate(notebook["cells"]):
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), f"study.ipynb cell {number}", "exec"), namespace)  # noqa: S102
    else:
        nbclient.NotebookClient(nbformat.reads(json.dumps(notebook), as_version=4), timeout=600,
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "study" / "report.html").stat().st_size > 10_000
    rows = [r for r in moetools.open(tmp_path / "study" / "eval.jsonl") if r["type"] == "domain"]
    assert sorted({r["model"] for r in rows}) == [0, 1, 2]
