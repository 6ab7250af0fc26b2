"""Only moe-mask's own code is ever trusted: a remote-mode masked directory whose auto_map (of the model, of the
config, of the tokenizer) reaches another Python file, that holds an extra Python file, or whose moe-mask file
was edited, is refused with exit 2 by moe-eval and by every loader, and the payload never runs (it would
write a marker file)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from moetools.cli import eval as eval_cli
from moetools.cli import probe, trace, tune
from moetools.cli.mask import command as mask_command
from moetools.errors import ModelError
from moetools.models.loader import load_config, load_model, load_tokenizer
from tests.tiny_models import save_tiny_olmoe

WORDS = [f"w{i}" for i in range(20)]

PAYLOAD = '''import pathlib

pathlib.Path({marker!r}).write_text("foreign code ran")

from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast


class EvilConfig(PretrainedConfig):
    model_type = "evil"


class EvilModel(PreTrainedModel):
    config_class = EvilConfig


class EvilTokenizer(PreTrainedTokenizerFast):
    pass
'''


@pytest.fixture(scope="module")
def remote_directory(tmp_path_factory):
    """A remote-mode directory of moe-mask (layers masked unequally), and a corpus."""
    root = tmp_path_factory.mktemp("remote")
    save_tiny_olmoe(root / "base", WORDS)
    experts = root / "experts.json"
    experts.write_text(json.dumps({"experts": {"0": [1], "1": [0, 7]}}))
    result = CliRunner().invoke(mask_command, [str(root / "base"), "--experts", str(experts), "-o",
                                               str(root / "masked")])
    assert result.exit_code == 0, result.output
    assert json.loads((root / "masked" / "config.json").read_text())["moe_mask"]["mode"] == "remote"
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": " ".join(WORDS[i:i + 10]), "domain": "d"}) + "\n"
                              for i in range(8)))
    return root / "masked", corpus


def _edit_json(path, change):
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value, indent=2))


def _model_auto_map(directory):
    _edit_json(directory / "config.json", lambda c: c["auto_map"].update(AutoModelForCausalLM="evil.EvilModel"))


def _config_auto_map(directory):
    _edit_json(directory / "config.json", lambda c: c["auto_map"].update(AutoConfig="evil.EvilConfig"))


def _tokenizer_auto_map_in_config(directory):
    _edit_json(directory / "config.json", lambda c: c["auto_map"].update(AutoTokenizer=["evil.EvilTokenizer", None]))


def _tokenizer_auto_map(directory):
    _edit_json(directory / "tokenizer_config.json",
               lambda c: c.update(auto_map={"AutoTokenizer": [None, "evil.EvilTokenizer"]},
                                  tokenizer_class="EvilTokenizer"))


def _extra_python_file(directory):
    pass  # evil.py alone, beside moe-mask's files


def _edited_moe_mask_file(directory):
    modeling = directory / "modeling_moetools_mask.py"
    modeling.write_text(modeling.read_text() + "\nfrom .evil import EvilConfig  # noqa\n")


TAMPERINGS = [_model_auto_map, _config_auto_map, _tokenizer_auto_map_in_config, _tokenizer_auto_map,
              _extra_python_file, _edited_moe_mask_file]


@pytest.fixture(params=TAMPERINGS, ids=lambda f: f.__name__.strip("_"))
def tampered(request, remote_directory, tmp_path):
    masked, corpus = remote_directory
    directory = tmp_path / "masked"
    shutil.copytree(masked, directory)
    marker = tmp_path / "PAYLOAD-RAN"
    (directory / "evil.py").write_text(PAYLOAD.format(marker=str(marker)))
    request.param(directory)
    return directory, corpus, marker


def test_moe_eval_refuses_a_tampered_directory_before_its_code_runs(tampered, tmp_path):
    directory, corpus, marker = tampered
    result = CliRunner().invoke(eval_cli.command, [str(directory), "--data", str(corpus), "-o",
                                                   str(tmp_path / "eval.jsonl")])
    assert result.exit_code == 2, result.output
    assert "refusing to load it with trust_remote_code" in result.output.splitlines()[-1]
    assert not marker.exists() and not (tmp_path / "eval.jsonl").exists()


def test_every_loader_refuses_a_tampered_directory(tampered, tmp_path):
    directory, corpus, marker = tampered
    for load in (lambda: load_model(directory, trust_remote_code=True),
                 lambda: load_config(directory, trust_remote_code=True),
                 lambda: load_tokenizer(directory, trust_remote_code=True)):
        with pytest.raises(ModelError, match="trust_remote_code"):
            load()
    for command, args in [(trace.command, [directory, corpus, "-o", tmp_path / "t.zst"]),
                          (probe.command, ["neurons", directory, corpus, "-o", tmp_path / "p.jsonl"]),
                          (tune.command, ["train", directory, "--data", corpus, "--mode", "full", "--steps", "1",
                                          "-o", tmp_path / "tuned"])]:
        result = CliRunner().invoke(command, [str(a) for a in args])
        assert result.exit_code == 2, result.output
    assert not marker.exists()


def test_moe_masks_own_directory_still_loads(remote_directory, tmp_path):
    masked, corpus = remote_directory
    result = CliRunner().invoke(eval_cli.command, [str(masked), "--data", str(corpus), "-o",
                                                   str(tmp_path / "eval.jsonl")])
    assert result.exit_code == 0, result.output


def test_trust_is_only_for_moe_mask_directories(remote_directory):
    masked, _ = remote_directory
    with pytest.raises(ModelError, match="not a remote-mode directory"):
        load_config(masked.parent / "base", trust_remote_code=True)
