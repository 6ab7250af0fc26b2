"""The rule of -o in every tool that writes a file or a directory (moetools.streams.outputs, formats/README.md
"Outputs"): never an input, an ancestor or a descendant of one; an existing output only with --force, and
--force replaces only what this suite wrote, atomically. Every input and every foreign file is hashed
before and after each case and must be byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from moetools.cli import cat, explain, mask, monet_train, probe, report, sample, score, select, trace, tune
from moetools.cli import eval as eval_cli
from moetools.cli import main as moetools_cli
from moetools.streams.outputs import MARKER
from tests.tiny_models import save_tiny_olmoe

WORDS = [f"w{i}" for i in range(20)]
REPO = Path(__file__).resolve().parents[2]


def run(command, args):
    return CliRunner().invoke(command, [str(a) for a in args])


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under ``root`` (or ``root`` itself) -> sha256 of its bytes; directories by their listing."""
    root = Path(root)
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    found = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        found[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return found


@dataclass
class World:
    root: Path
    model: Path
    corpus: Path
    code: Path
    trace: Path
    samples: Path
    labels: Path
    scores: Path
    experts: Path
    adapter: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    """The inputs every tool reads: a tiny OLMoE, a corpus, and the streams the pipeline makes of them."""
    root = tmp_path_factory.mktemp("inputs")
    save_tiny_olmoe(root / "model", WORDS)
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": " ".join(f"w{(i * 7 + j) % 20}" for j in range(30)),
                                          "domain": f"d{i % 2}"}) + "\n" for i in range(24)))
    code = root / "code"
    code.mkdir()
    (code / "a.py").write_text("def f(x):\n    return x + 1\n" * 20)
    w = World(root, root / "model", corpus, code, root / "trace.msgpack.zst", root / "samples.msgpack.zst",
              root / "labels.jsonl", root / "scores.jsonl", root / "experts.json", root / "adapter")
    for command, args in [(trace.command, [w.model, w.corpus, "-o", w.trace]),
                          (sample.command, [w.trace, "-o", w.samples]),
                          (explain.command, [w.samples, "--backend", "offline", "--no-cache", "-o", w.labels]),
                          (score.command, [w.trace, "--format", "jsonl", "-o", w.scores]),
                          (select.command, [w.scores, "--random", "1", "--seed", "0", "-o", w.experts]),
                          (tune.command, ["train", w.model, "--data", w.corpus, "--mode", "full", "--steps", "1",
                                          "--batch-size", "2", "--seq-len", "8", "-o", w.adapter])]:
        result = run(command, args)
        assert result.exit_code == 0, result.output
    return w


# tool -> (command, arguments before -o given the world, its inputs, "file" or "dir")
TOOLS = {
    "moe-trace": (trace.command, lambda w: [w.model, w.corpus], lambda w: [w.model, w.corpus], "file"),
    "moe-sample": (sample.command, lambda w: [w.trace], lambda w: [w.trace], "file"),
    "moe-explain": (explain.command, lambda w: [w.samples, "--backend", "offline", "--no-cache"],
                    lambda w: [w.samples], "file"),
    "moe-score": (score.command, lambda w: [w.trace, "--format", "jsonl"], lambda w: [w.trace], "file"),
    "moe-select": (select.command, lambda w: [w.scores, "--random", "1", "--seed", "1"], lambda w: [w.scores],
                   "file"),
    "moe-mask": (mask.command, lambda w: [w.model, "--experts", w.experts], lambda w: [w.model, w.experts], "dir"),
    "moe-eval": (eval_cli.command, lambda w: [w.model, "--data", w.corpus], lambda w: [w.model, w.corpus], "file"),
    "moe-tune": (tune.command, lambda w: ["train", w.model, "--data", w.corpus, "--mode", "full", "--steps", "1",
                                          "--batch-size", "2", "--seq-len", "8"], lambda w: [w.model, w.corpus], "dir"),
    "moe-tune merge": (tune.command, lambda w: ["merge", w.adapter], lambda w: [w.adapter, w.model], "dir"),
    "moe-report": (report.command, lambda w: [w.labels, w.scores], lambda w: [w.labels, w.scores], "file"),
    "moe-probe": (probe.command, lambda w: ["neurons", w.model, w.corpus], lambda w: [w.model, w.corpus], "file"),
    "monet-train": (monet_train.command, lambda w: ["--data", w.corpus, "--arch", "llama", "--steps", "1",
                                                    "--batch-size", "2", "--seq-len", "16", "--d-model", "16",
                                                    "--layers", "1", "--heads", "2", "--vocab-size", "300"],
                    lambda w: [w.corpus], "dir"),
    "moetools corpus build": (moetools_cli.command, lambda w: ["corpus", "build", "--domains", "code",
                                                               "--source-root", f"code={w.code}"],
                              lambda w: [w.code], "dir"),
    "moe-cat": (cat.command, lambda w: [w.trace], lambda w: [w.trace], "file"),
}


def attempt(world, name, output, *extra):
    command, before, _, _ = TOOLS[name]
    return run(command, [*before(world), "-o", output, *extra])


def refused(result, *words) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def untouched(world):
    """Asserts, after the test, that no input changed."""
    before = tree_hashes(world.root)
    yield
    assert tree_hashes(world.root) == before


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("name", list(TOOLS))
def test_output_equal_to_an_input_is_refused(world, untouched, name, force):
    for given in TOOLS[name][2](world):
        refused(attempt(world, name, given, *(["--force"] if force else [])))


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("name", list(TOOLS))
def test_output_holding_or_inside_an_input_is_refused(world, untouched, tmp_path, name, force):
    flags = ["--force"] if force else []
    link = tmp_path / "link"
    link.symlink_to(world.root, target_is_directory=True)
    for holder in (world.root, link):  # the directory holding every input, also through a symbolic link
        refused(attempt(world, name, holder, *flags))
    for given in TOOLS[name][2](world):
        refused(attempt(world, name, Path(given) / "out", *flags))
        refused(attempt(world, name, link / Path(given).name / "out", *flags))


@pytest.mark.parametrize("name", list(TOOLS))
def test_a_foreign_file_or_directory_is_never_replaced(world, untouched, tmp_path, name):
    kind = TOOLS[name][3]
    foreign = tmp_path / "theirs"
    if kind == "dir":
        foreign.mkdir()
        (foreign / "thesis.tex").write_text("years of work\n")
        (foreign / "config.json").write_text("{}\n")
    else:
        foreign.write_text("years of work\n")
    before = tree_hashes(foreign)
    # moe-explain continues an output of its own, and refuses to continue anything else
    refused(attempt(world, name, foreign), "not written by moetools" if name == "moe-explain" else "--force")
    refused(attempt(world, name, foreign, "--force"), "not written by moetools")
    assert tree_hashes(foreign) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs"]  # no NAME.partial or NAME.old left


@pytest.mark.parametrize("name", list(TOOLS))
def test_a_previous_output_is_refused_then_replaced_atomically_with_force(world, untouched, tmp_path, name):
    kind = TOOLS[name][3]
    out = tmp_path / "out"
    result = attempt(world, name, out)
    assert result.exit_code == 0, result.output
    held = tmp_path / "held"  # a hard link keeps the first file's inode from being reused by the next one
    held.mkdir()
    if kind == "dir":
        assert (out / MARKER).is_file()
        (out / "left-by-the-first-run").write_text("1")
    else:
        os.link(out, held / "first")
    before = tree_hashes(out)

    def replaced() -> bool:
        if kind == "dir":
            return not (out / "left-by-the-first-run").exists()
        return not out.samefile(held / "first")

    again = attempt(world, name, out)
    if name == "moe-explain":  # moe-explain continues its own output (its labels are kept): nothing is lost
        assert again.exit_code == 0 and "16 already done" in again.output, again.output
        os.link(out, held / "second")
        shutil.move(held / "second", held / "first")
    else:
        refused(again, "exists", "--force")
        assert tree_hashes(out) == before and not replaced()
    result = attempt(world, name, out, "--force")
    assert result.exit_code == 0, result.output
    assert replaced()  # a new file or directory, renamed into place
    if kind == "dir":
        assert (out / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held", "out"]  # no NAME.partial or NAME.old left


def test_moe_tune_train_into_a_finished_adapter_needs_resume_or_force(world, tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(world.adapter, adapter)
    before = tree_hashes(adapter)
    refused(attempt(world, "moe-tune", adapter), "--force")
    assert tree_hashes(adapter) == before


def test_merge_refuses_a_tune_json_that_is_not_its_checkpoints(world, tmp_path):
    """A run killed after an earlier one finished in the same directory: its checkpoint is newer than the
    adapter beside it; merge must not take the stale adapter for the new run's."""
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["train", world.model, "--data", world.corpus, "--mode", "full", "--batch-size", "2", "--seq-len", "8",
              "--checkpoint-every", "1"]
    assert run(tune.command, [*common, "--steps", "2", "-o", first]).exit_code == 0
    assert run(tune.command, ["merge", first, "-o", tmp_path / "merged"]).exit_code == 0
    # the second run stops after its first step (as a kill after a checkpoint would leave it)
    assert run(tune.command, [*common, "--steps", "3", "--stop-at-step", "1", "-o", second]).exit_code == 0
    assert not (second / "tune.json").exists()
    shutil.rmtree(first / "checkpoint")
    shutil.copytree(second / "checkpoint", first / "checkpoint")  # what the old moe-tune left behind
    refused(run(tune.command, ["merge", first, "-o", tmp_path / "merged2"]), "not the adapter of the run")
    assert not (tmp_path / "merged2").exists()
    # the same run, its checkpoint newer than its adapter: --resume of a finished run, killed
    shutil.rmtree(first)
    assert run(tune.command, [*common, "--steps", "2", "-o", first]).exit_code == 0
    state_path = first / "checkpoint" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps({**state, "step": 5}))
    refused(run(tune.command, ["merge", first, "-o", tmp_path / "merged3"]), "not the adapter of the run")
    # and --resume removes the finished run's tune.json before it trains on
    state_path.write_text(json.dumps(state))
    assert run(tune.command, [*common, "--steps", "3", "--stop-at-step", "2", "--resume", "-o", first]).exit_code == 0
    assert not (first / "tune.json").exists()


def test_force_on_a_training_directory_keeps_the_old_one_until_the_new_run_is_complete(world, tmp_path):
    out = tmp_path / "adapter"
    common = ["train", world.model, "--data", world.corpus, "--mode", "full", "--batch-size", "2", "--seq-len", "8"]
    assert run(tune.command, [*common, "--steps", "1", "-o", out]).exit_code == 0
    finished = tree_hashes(out)
    # a replacement that stops before it is complete: the old adapter waits, complete, in OUT.old
    assert run(tune.command, [*common, "--steps", "3", "--stop-at-step", "1", "--checkpoint-every", "1",
                              "--force", "-o", out]).exit_code == 0
    assert tree_hashes(tmp_path / "adapter.old") == finished and not (out / "tune.json").exists()
    # starting over again keeps it; finishing removes it
    assert run(tune.command, [*common, "--steps", "1", "--force", "-o", out]).exit_code == 0
    assert (out / "tune.json").is_file() and not (tmp_path / "adapter.old").exists()


def test_moe_mask_force_onto_an_ancestor_of_the_model_deletes_nothing(world, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(world.model, home / "models" / "olmoe")
    write = home / "notes.txt"
    write.write_text("mine\n")
    before = tree_hashes(home)
    for target in (home, home / "models"):
        refused(run(mask.command, [home / "models" / "olmoe", "--experts", world.experts, "-o", target, "--force"]),
                "holds the input")
    assert tree_hashes(home) == before


def test_merge_onto_an_existing_directory_never_removes_it(world, tmp_path):
    other = tmp_path / "base-copy"
    shutil.copytree(world.model, other)
    before = tree_hashes(other)
    refused(run(tune.command, ["merge", world.adapter, "-o", other]), "exists")
    refused(run(tune.command, ["merge", world.adapter, "-o", other, "--force"]), "not written by moetools")
    assert tree_hashes(other) == before


def test_masked_directory_modes_follow_the_umask(world, tmp_path):
    """Another user of a shared machine reads the checkpoint: 0755 / 0644 under umask 022, as any new file."""
    import subprocess
    import sys

    out = tmp_path / "masked"
    script = ("import os, sys; os.umask(0o022); from moetools.cli.mask import command; "
              "command.main(sys.argv[1:], standalone_mode=True)")
    done = subprocess.run([sys.executable, "-c", script, str(world.model), "--experts", str(world.experts),
                           "-o", str(out), "-q"], check=False, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o755
    modes = {path.name: path.stat().st_mode & 0o777 for path in out.iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o644}, modes


# -- a --force replacement killed at any moment leaves the old or the new output, complete ----------------

def _run_bin(arguments: list, env=None):
    import subprocess
    import time

    started = time.monotonic()
    done = subprocess.run([str(REPO / "bin" / str(arguments[0])), *map(str, arguments[1:])], capture_output=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return time.monotonic() - started


def _killed_at(arguments: list, delay: float) -> None:
    import signal
    import subprocess
    import time

    process = subprocess.Popen([str(REPO / "bin" / str(arguments[0])), *map(str, arguments[1:])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


def _replacements_killed_at_random(tmp_path, out, versions: dict, runs: int, seed: int) -> list[str]:
    """``versions``: name -> arguments writing that version to ``out`` (without --force). Kills ``runs``
    --force replacements at random moments; after each, ``out`` must be the old or the new version whole,
    and a rerun must complete the replacement. Returns what each kill left ("old" / "new")."""
    import random

    rng = random.Random(seed)
    complete, took = {}, {}
    for name, arguments in versions.items():
        took[name] = _run_bin([*arguments, "--force"])
        complete[name] = tree_hashes(out)
    assert len({json.dumps(v, sort_keys=True) for v in complete.values()}) == len(versions)
    names, current, seen = list(versions), list(versions)[-1], []
    for run_index in range(runs):
        target = names[run_index % len(names)] if names[run_index % len(names)] != current else \
            names[(run_index + 1) % len(names)]
        _killed_at([*versions[target], "--force"], rng.uniform(0, took[target] * 1.1))
        left = tree_hashes(out)
        assert left in (complete[current], complete[target]), f"run {run_index}: neither the old nor the new output"
        seen.append("old" if left == complete[current] else "new")
        _run_bin([*versions[target], "--force"])  # a rerun recovers (a stale NAME.partial is the suite's)
        assert tree_hashes(out) == complete[target]
        current = target
    return seen


@pytest.mark.slow
def test_force_replacements_killed_at_random_points_leave_old_or_new_complete(tmp_path):
    """20 --force replacements (a file, moe-cat; a directory, corpus build) killed with SIGKILL at random moments."""
    trace = tmp_path / "big.trace.jsonl"
    trace.write_bytes((REPO / "formats" / "examples" / "samples" / "trace.jsonl").read_bytes() * 200)
    out = tmp_path / "copy"
    seen = _replacements_killed_at_random(tmp_path, out, {
        "jsonl": ["moe-cat", trace, "--format", "jsonl", "-o", out],
        "msgpack": ["moe-cat", trace, "--format", "msgpack", "-o", out]}, runs=10, seed=0)
    code = tmp_path / "code"
    code.mkdir()
    for index in range(30):
        (code / f"m{index}.py").write_text("".join(f"def f{index}_{n}(x):\n    return x * {n}\n\n\n" for n in range(80)))
    corpus = tmp_path / "corpus"
    common = ["moetools", "corpus", "build", "--domains", "code", "--source-root", f"code={code}", "-q", "-o", corpus]
    seen += _replacements_killed_at_random(tmp_path, corpus, {
        "small": [*common, "--max-tokens-per-domain", "2000"],
        "large": [*common, "--max-tokens-per-domain", "0"]}, runs=10, seed=1)
    assert len(seen) == 20


def test_without_an_atomic_exchange_a_kill_between_the_renames_is_recovered(tmp_path, monkeypatch):
    """File systems without renameat2(RENAME_EXCHANGE): the old directory waits as NAME.old for the moment of
    the swap, and the next run (or check) puts it back when the kill came before the new one was renamed in."""
    from moetools.streams import outputs
    from moetools.streams.files import create_directory

    monkeypatch.setattr(outputs, "_exchange", lambda first, second: False)
    target = tmp_path / "out"
    with create_directory(target) as partial:
        (partial / "a").write_text("old")
    with create_directory(target) as partial:
        (partial / "a").write_text("new")
    assert (target / "a").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    os.rename(target, outputs.aside_path(target))  # killed between the two renames
    assert outputs.check_output(target, force=True, directory=True) == outputs.REPLACE
    assert (target / "a").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_what_force_may_replace(world, tmp_path):
    from moetools.streams.outputs import is_suite_directory, is_suite_file

    ours = [world.trace, world.samples, world.labels, world.scores, world.experts]
    assert all(is_suite_file(path) for path in ours)
    report_page = tmp_path / "report.html"
    assert run(report.command, [world.labels, "-o", report_page]).exit_code == 0 and is_suite_file(report_page)
    (tmp_path / "empty").write_bytes(b"")
    assert is_suite_file(tmp_path / "empty")
    foreign = {"esft.json": json.dumps({"experts": {"1": [0, 3]}}), "notes.txt": "mine\n",
               "page.html": "<!DOCTYPE html><html><body>mine</body></html>\n", "config.json": "{}\n",
               "truncated.zst": world.trace.read_bytes()[:3]}
    for name, text in foreign.items():
        (tmp_path / name).write_text(text) if isinstance(text, str) else (tmp_path / name).write_bytes(text)
        assert not is_suite_file(tmp_path / name), name
    assert is_suite_directory(world.adapter) and not is_suite_directory(world.model)
    (tmp_path / "empty-dir").mkdir()
    assert is_suite_directory(tmp_path / "empty-dir")
