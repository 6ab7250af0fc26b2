"""Bad input gets a one-line message and a documented exit code, never "internal error".

First the model cases one by one (damaged weights, no tokenizer, --logit-lens past the vocabulary,
a device that does not exist, monet-train --tokenizer without tokenizer files), then every tool of
``moetools.cli.TOOLS`` walked over one shared list of bad files.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
import zstandard
from click.testing import CliRunner

from moetools.cli import TOOLS, load_command
from tests.tiny_models import save_tiny_olmoe

WORDS = ["the", "a", "of", "to", "and", "expert", "model", "token", "court", "patient", "theorem", "code"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="module")
def olmoe_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("olmoe")
    save_tiny_olmoe(directory, WORDS)
    return directory


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": " ".join(WORDS[i:i + 5])}) + "\n" for i in range(3)))
    return path


def invoke(tool: str, args):
    return CliRunner().invoke(load_command(tool), [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, tool: str, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: "), result.stderr
    assert "internal error" not in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def model_copy(olmoe_dir, tmp_path, name="model"):
    target = tmp_path / name
    shutil.copytree(olmoe_dir, target)
    return target


# -- model cases ------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["random", "cut"])
def test_damaged_weights_are_a_usage_error(olmoe_dir, corpus, tmp_path, damage):
    model = model_copy(olmoe_dir, tmp_path)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(os.urandom(len(data)) if damage == "random" else data[:len(data) // 2])
    output = tmp_path / "out.msgpack.zst"
    result = invoke("moe-trace", [model, corpus, "-o", output])
    assert_one_line_error(result, "moe-trace", 2, f"cannot load the model in {model}")
    assert not output.exists() and not (tmp_path / "out.msgpack.zst.partial").exists()


def test_model_without_tokenizer_files_is_a_usage_error(olmoe_dir, corpus, tmp_path):
    model = model_copy(olmoe_dir, tmp_path)
    for name in TOKENIZER_FILES:
        (model / name).unlink(missing_ok=True)
    result = invoke("moe-trace", [model, corpus, "-o", tmp_path / "out.msgpack.zst"])
    assert_one_line_error(result, "moe-trace", 2, f"{model} has no tokenizer (none of tokenizer.json")


def test_logit_lens_past_the_vocabulary_is_refused_before_any_output(olmoe_dir, corpus, tmp_path):
    output = tmp_path / "out.msgpack.zst"
    result = invoke("moe-trace", [olmoe_dir, corpus, "--logit-lens", 100000, "-o", output])
    assert_one_line_error(result, "moe-trace", 2, "--logit-lens 100000 exceeds the model's vocabulary of 64 tokens")
    assert list(tmp_path.iterdir()) == []  # no output, no .partial


@pytest.mark.parametrize("device", ["nonsense", "cuda", "cuda:99"])
def test_device_that_does_not_exist_is_a_usage_error(olmoe_dir, corpus, tmp_path, device):
    if device == "cuda" and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.device_count()}"
    result = invoke("moe-trace", [olmoe_dir, corpus, "--device", device, "-o", tmp_path / "out.msgpack.zst"])
    assert_one_line_error(result, "moe-trace", 2, f"--device {device}")
    assert list(tmp_path.iterdir()) == []


def test_monet_train_tokenizer_directory_without_tokenizer_files(corpus, tmp_path):
    empty = tmp_path / "tok"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    result = invoke("monet-train", ["--data", corpus, "-o", tmp_path / "out", "--tokenizer", empty, "--steps", 1])
    assert_one_line_error(result, "monet-train", 2, f"--tokenizer {empty} has no tokenizer")


# -- every tool, one list of bad inputs -------------------------------------------------------

def bad_inputs(directory):
    """name -> path of a file (or directory) no tool should accept as its input stream or corpus."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {"missing": directory / "missing.msgpack.zst", "empty": directory / "empty.jsonl",
             "binary": directory / "binary.bin", "truncated-zstd": directory / "cut.msgpack.zst",
             "bad-json": directory / "bad.jsonl", "directory": directory / "a-directory"}
    files["empty"].write_bytes(b"")
    files["binary"].write_bytes(b"\xff\xfe\x00\x81" + os.urandom(2000))
    frame = zstandard.ZstdCompressor().compress(b'{"type": "header"}\n' * 200)
    files["truncated-zstd"].write_bytes(frame[:len(frame) // 2])
    files["bad-json"].write_text('{"type": "header", "kind": \n')
    files["directory"].mkdir(exist_ok=True)
    return files


#: how each tool takes the bad input (``{input}``); a tool not listed takes it as its first argument.
#: moe-trace reads plain text as a corpus, so a text line is valid input there, not a bad one.
TEMPLATES = {
    "moe-trace": (["{model}", "{input}", "-o", "{out}/trace.msgpack.zst"], {"bad-json"}),
    "monet-train": (["--data", "{input}", "-o", "{out}/monet", "--steps", "1", "--seq-len", "8"], set()),
    "moe-explain": (["{input}", "--backend", "offline", "-o", "{out}/labels.jsonl"], set()),
    "moe-select": (["--by", "das", "{input}"], set()),
    "moe-tune": (["{model}", "--data", "{input}", "--mode", "full", "-o", "{out}/tuned", "--steps", "1"], set()),
    "moetools": (None, set()),  # subcommands only (corpus, demo): no input stream
}
BAD = ("missing", "empty", "binary", "truncated-zstd", "bad-json", "directory")
DOCUMENTED_EXIT = {1, 2, 3}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_tool_refuses_bad_input_in_one_line(tool, olmoe_dir, tmp_path):
    template, valid = TEMPLATES.get(tool, (["{input}"], set()))
    if template is None:
        pytest.skip(f"{tool} takes no input stream")
    inputs = bad_inputs(tmp_path / "bad")
    failures = []
    for name in BAD:
        if name in valid:
            continue
        out = tmp_path / f"out-{name}"
        out.mkdir()
        args = [a.format(input=inputs[name], model=olmoe_dir, out=out) for a in template]
        result = CliRunner().invoke(load_command(tool), args, input=b"", catch_exceptions=True)
        lines = result.stderr.splitlines()
        problems = []
        if result.exit_code not in DOCUMENTED_EXIT:
            problems.append(f"exit {result.exit_code}")
        if not lines or not all(line.startswith(f"{tool}: ") for line in lines):
            problems.append("stderr lines not all 'TOOL: ...'")
        if "internal error" in result.stderr or "Traceback" in result.stderr or result.exception is not None \
                and not isinstance(result.exception, SystemExit):
            problems.append("internal error")
        if problems:
            failures.append(f"{name}: {', '.join(problems)}: {result.stderr.strip()[-300:]!r}")
    assert not failures, f"{tool}:\n" + "\n".join(failures)


#: tools that load a model directory (through moetools.models.load_model), and how ({model})
MODEL_TEMPLATES = {
    "moe-trace": ["{model}", "{corpus}", "-o", "{out}/trace.msgpack.zst"],
    "moe-tune": ["{model}", "--data", "{corpus}", "--mode", "full", "-o", "{out}/tuned", "--steps", "1"],
    "moe-mask": ["{model}", "--experts", "{experts}", "-o", "{out}/masked"],
    "moe-eval": ["{model}", "--data", "{corpus}", "-o", "{out}/eval.jsonl"],
}


#: a mask copies the directory as it is: a model without a tokenizer is still maskable
NEEDS_NO_TOKENIZER = {"moe-mask": ("no-tokenizer",)}


def bad_models(olmoe_dir, directory):
    """name -> a damaged copy of the tiny OLMoE."""
    models = {}
    for name in ("random-weights", "cut-weights", "no-tokenizer", "no-config"):
        target = directory / name
        shutil.copytree(olmoe_dir, target)
        models[name] = target
    weights = (olmoe_dir / "model.safetensors").read_bytes()
    (models["random-weights"] / "model.safetensors").write_bytes(os.urandom(len(weights)))
    (models["cut-weights"] / "model.safetensors").write_bytes(weights[:len(weights) // 2])
    for name in TOKENIZER_FILES:
        (models["no-tokenizer"] / name).unlink(missing_ok=True)
    (models["no-config"] / "config.json").unlink()
    return models


@pytest.mark.parametrize("tool", sorted(MODEL_TEMPLATES))
def test_every_model_tool_refuses_a_damaged_model_in_one_line(tool, olmoe_dir, corpus, tmp_path):
    if tool not in TOOLS:
        pytest.skip(f"{tool} is not a tool yet")
    experts = tmp_path / "experts.json"
    experts.write_text(json.dumps({"experts": {"0": [1]}}))
    failures = []
    for name, model in bad_models(olmoe_dir, tmp_path / "models").items():
        if name in NEEDS_NO_TOKENIZER.get(tool, ()):
            continue
        out = tmp_path / f"out-{name}"
        out.mkdir()
        args = [a.format(model=model, corpus=corpus, experts=experts, out=out) for a in MODEL_TEMPLATES[tool]]
        result = CliRunner().invoke(load_command(tool), args, catch_exceptions=True)
        lines = result.stderr.splitlines()
        # progress lines ("moe-eval: evaluating MODEL") may come first; the error is the last line
        if result.exit_code != 2 or not lines or not all(line.startswith(f"{tool}: ") for line in lines) \
                or "internal error" in result.stderr:
            failures.append(f"{name}: exit {result.exit_code}: {result.stderr.strip()[-300:]!r}")
    assert not failures, f"{tool}:\n" + "\n".join(failures)
