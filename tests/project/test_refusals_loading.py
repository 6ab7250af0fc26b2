"""Weights that do not belong to the config are refused by the one loader, in every tool that loads a model.

The case: a directory whose config.json is Mixtral's but whose model.safetensors is OLMoE's (same
sizes, other tensor names). transformers loads it with every expert tensor newly initialised and
prints a table; every tool must instead exit 2 with one line naming the first tensors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import transformers

from moetools.errors import ModelError
from moetools.models.loader import load_model
from tests.cli_checks import invoke
from tests.tiny_models import save_tiny_mixtral, save_tiny_olmoe, save_word_tokenizer

ROOT = Path(__file__).resolve().parents[2]
WORDS = ["the", "a", "of", "to", "and", "expert", "model", "token", "court", "patient", "theorem", "code"]
#: what the one-line refusal names: the rule, a missing (newly initialised) and an unexpected tensor
NAMED = ("do not belong to its config (MixtralForCausalLM)",
         "missing (would be newly initialised): model.layers.0.mlp.experts.down_proj",
         "unexpected: model.layers.0.mlp.experts.0.down_proj.weight")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("loading")
    save_tiny_olmoe(root / "olmoe", WORDS)
    save_tiny_mixtral(root / "mixtral", WORDS)
    shutil.copytree(root / "mixtral", root / "mixed")
    shutil.copy(root / "olmoe" / "model.safetensors", root / "mixed" / "model.safetensors")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": " ".join(WORDS[i:i + 6]),
                                          "domain": "law" if i % 2 else "code"}) + "\n" for i in range(6)))
    return root



def assert_refused(result, tool: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.splitlines()  # progress lines ("evaluating DIR") may come first, each the tool's
    assert lines and all(line.startswith(f"{tool}: ") for line in lines), result.stderr
    for fragment in NAMED:
        assert fragment in lines[-1], lines[-1]


def test_the_loader_refuses_weights_of_another_family_naming_tensors(models):
    with pytest.raises(ModelError) as raised:
        load_model(models / "mixed")
    assert raised.value.exit_code == 2
    assert all(fragment in str(raised.value) for fragment in NAMED), raised.value
    with pytest.raises(ModelError):  # structure only (moe-mask, moe-score --model): the same rule
        load_model(models / "mixed", device_map="meta", tokenizer=False)


def test_misshapen_weights_are_named_with_both_shapes(models, tmp_path):
    target = shutil.copytree(models / "olmoe", tmp_path / "narrow")
    config = json.loads((target / "config.json").read_text())
    config["intermediate_size"] = 40
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError) as raised:
        load_model(target)
    assert "of another shape (checkpoint vs model): model.layers.0.mlp.experts.down_proj (8, 32, 48) vs " \
           "(8, 32, 40)" in str(raised.value)


def test_checkpoints_that_belong_to_their_config_still_load(models, tmp_path):
    for name in ("olmoe", "mixtral"):
        assert load_model(models / name).adapter is not None
    # a tied unembedding is not stored (transformers ties it): not "missing"
    config = transformers.OlmoeConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, num_experts=8,
                                      num_experts_per_tok=2, tie_word_embeddings=True, pad_token_id=1,
                                      bos_token_id=None, eos_token_id=None)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "tied")
    save_word_tokenizer(tmp_path / "tied", WORDS)
    model = load_model(tmp_path / "tied").model
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("tool", ["moe-trace", "moe-eval", "moe-tune train", "moe-mask", "moe-probe neurons"])
def test_every_tool_that_loads_a_model_refuses_it(models, tmp_path, tool):
    mixed, corpus = models / "mixed", models / "corpus.jsonl"
    experts = tmp_path / "set.json"
    experts.write_text(json.dumps({"experts": {"0": [1]}}))
    args = {"moe-trace": [mixed, corpus, "-o", tmp_path / "out.msgpack.zst"],
            "moe-eval": [mixed, "--data", corpus, "-o", tmp_path / "eval.jsonl"],
            "moe-tune train": [mixed, "--data", corpus, "-o", tmp_path / "adapter", "--steps", "1", "--seq-len", "8",
                               "--mode", "full"],
            "moe-mask": [mixed, "--experts", experts, "-o", tmp_path / "masked"],
            "moe-probe neurons": [mixed, corpus, "-o", tmp_path / "probe.jsonl"]}[tool]
    name, *sub = tool.split()
    result = invoke(name, [*sub, *args])
    assert_refused(result, name)
    assert not [p for p in tmp_path.iterdir() if p.name != "set.json"], list(tmp_path.iterdir())  # nothing written


def test_moe_tune_merge_refuses_such_a_base(models, tmp_path):
    adapter = tmp_path / "adapter"
    result = invoke("moe-tune", ["train", models / "olmoe", "--data", models / "corpus.jsonl", "-o", adapter,
                                 "--steps", "1", "--seq-len", "8", "--mode", "full", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    result = invoke("moe-tune", ["merge", adapter, "--base", models / "mixed", "-o", tmp_path / "merged"])
    assert_refused(result, "moe-tune")
    assert not (tmp_path / "merged").exists()


def test_moe_explain_local_backend_refuses_such_a_model(models, tmp_path):
    from tests.llm_stub import write_samples

    write_samples(tmp_path / "s.msgpack.zst", experts=2)
    result = invoke("moe-explain", [tmp_path / "s.msgpack.zst", "--backend", "local", "--model", models / "mixed",
                                    "--no-cache", "-o", tmp_path / "labels.jsonl"])
    assert_refused(result, "moe-explain")
    assert not (tmp_path / "labels.jsonl").exists()


def test_moe_score_model_refuses_such_a_directory(models, tmp_path):
    trace = tmp_path / "olmoe.msgpack.zst"
    assert invoke("moe-trace", [models / "olmoe", models / "corpus.jsonl", "-o", trace]).exit_code == 0
    result = invoke("moe-score", [trace, "--model", models / "mixed", "--clusters", "4", "-o", tmp_path / "s.jsonl"])
    assert_refused(result, "moe-score")


def test_the_refusal_is_one_line_on_a_real_stderr(models, tmp_path):
    """transformers' multi-line LOAD REPORT table is not printed: the tool's own line says it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run([str(ROOT / "bin" / "moe-trace"), str(models / "mixed"),
                             str(models / "corpus.jsonl"), "-o", str(tmp_path / "out.msgpack.zst")],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("moe-trace: ") and "LOAD REPORT" not in result.stderr, lines
