"""MONET checkpoints in the layout of the published release: every tool reads them without running
the code they carry.

What the layout is, from the MONET paper and the project's papers README [004 App. A.1]: config keys
``model_type="monet"``, ``moe_dim``, ``moe_heads``, ``moe_experts``, ``moe_topk``, ``moe_groups``,
``moe_decompose``, ``hidden_act="relu2"``, the LLaMA keys, and the per-layer state-dict names
``router.w1/w2/norm1/norm2`` and ``moe.u1/u2/v11/v12/v21/v22/b1/b2`` (VD) or ``moe.u/v/b`` (HD); the
directory carries its own ``configuration_monet.py``/``modeling_monet.py`` and an ``auto_map`` that
points at them. Checked against a public third-party copy of the release's code: its ``MonetConfig``
subclasses ``LlamaConfig`` with the transformers 4 keys ``rope_theta``/``rope_scaling`` and
``output_router_probs``, and its router norms are ``BatchNorm1d(moe_heads, affine=False)`` (so
``running_mean``/``running_var``/``num_batches_tracked`` are in the state dict, as in moetools'
MONET). Not verified here (no published file on this machine): the exact ``auto_map`` entries and
the ``torch_dtype``/``transformers_version`` values; the fixture uses the two ``auto_map`` entries
the remote-code convention needs. Its code files raise when imported, so a tool that ran them would
fail: moetools registers its own MONET classes and never trusts a directory's code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner

from moetools.models.loader import load_model
from moetools.models.monet.shipped import is_shipped
from moetools.streams import StreamReader
from moetools.testing.tiny_models import save_tiny_monet

WORDS = [f"w{i}" for i in range(40)]
#: the release's own code, standing in: importing it fails loudly
FOREIGN_CODE = 'raise RuntimeError("the checkpoint\'s own code ran")\n'
PUBLISHED_AUTO_MAP = {"AutoConfig": "configuration_monet.MonetConfig",
                      "AutoModelForCausalLM": "modeling_monet.MonetForCausalLM"}


def save_published_monet(directory: Path, decompose: str = "vertical") -> Path:
    """A tiny MONET in the published layout: bf16, sharded with an index, transformers 4 keys, its own code."""
    scratch = directory.with_name(directory.name + "-moetools")
    save_tiny_monet(scratch, WORDS, layers=2, moe_experts=4, groups=1, decompose=decompose)
    model = transformers.AutoModelForCausalLM.from_pretrained(scratch, dtype=torch.bfloat16)
    model.save_pretrained(directory, max_shard_size=6_000)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (directory / name).write_bytes((scratch / name).read_bytes())
    config = json.loads((directory / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config.pop("dtype")
    config.update(rope_theta=rope["rope_theta"], rope_scaling=None, torch_dtype="bfloat16",
                  transformers_version="4.44.2", auto_map=PUBLISHED_AUTO_MAP)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("configuration_monet.py", "modeling_monet.py"):
        (directory / name).write_text(FOREIGN_CODE)
    return directory


@pytest.fixture(scope="module", params=["vertical", "horizontal"])
def published(tmp_path_factory, request):
    name = {"vertical": "monet-vd-tiny-hf", "horizontal": "monet-hd-tiny-hf"}[request.param]
    return save_published_monet(tmp_path_factory.mktemp("monet") / name, request.param)


def write_corpus(path, documents=6, seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w") as handle:
        for number in range(documents):
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(5, 14))))
            handle.write(json.dumps({"id": f"d{number}", "text": text, "domain": ["law", "med"][number % 2]}) + "\n")
    return path


def test_fixture_has_the_published_layout(published):
    config = json.loads((published / "config.json").read_text())
    assert config["auto_map"] == PUBLISHED_AUTO_MAP and "rope_parameters" not in config
    assert len(list(published.glob("model-*.safetensors"))) >= 2
    names = set(json.loads((published / "model.safetensors.index.json").read_text())["weight_map"])
    vertical = ("moe.u1.weight", "moe.u1.bias", "moe.u2.weight", "moe.v11.weight", "moe.v12.weight",
                "moe.v21.weight", "moe.v22.weight", "moe.b1", "moe.b2")
    horizontal = ("moe.u.weight", "moe.u.bias", "moe.v.weight", "moe.b")
    decompose = json.loads((published / "config.json").read_text())["moe_decompose"]
    for part in ("router.w1.weight", "router.w2.weight", *(vertical if decompose == "vertical" else horizontal)):
        assert f"model.layers.0.{part}" in names, part
    # what running its code does, in a Python where moetools registered nothing
    code = ("import sys; sys.modules['moetools'] = None; import transformers; "
            "transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)")
    done = subprocess.run([sys.executable, "-c", code, str(published)], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "the checkpoint's own code ran" in done.stderr, done.stderr[-500:]


def test_loaded_with_moetools_classes_and_the_published_values(published):
    loaded = load_model(published)
    assert type(loaded.model).__module__ == "moetools.models.monet.modeling_monet"
    assert loaded.model.dtype == torch.bfloat16 and loaded.adapter.name == "monet"
    assert loaded.model.config.rope_parameters["rope_theta"] == 10000.0
    reference = transformers.AutoModelForCausalLM.from_pretrained(published.with_name(published.name + "-moetools"),
                                                                  dtype=torch.bfloat16)
    ids = torch.randint(2, 42, (1, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, reference(ids).logits)


@pytest.mark.slow
def test_every_tool_reads_it_without_running_its_code(published, tmp_path):
    from moetools.cli.eval import command as eval_command
    from moetools.cli.mask import command as mask_command
    from moetools.cli.probe import command as probe_command
    from moetools.cli.trace import command as trace_command
    from moetools.cli.tune import command as tune_command

    corpus = write_corpus(tmp_path / "c.jsonl")
    runner = CliRunner()
    result = runner.invoke(trace_command, [str(published), str(corpus), "--max-length", "12", "-o",
                                           str(tmp_path / "t.msgpack.zst")])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "t.msgpack.zst", "rb") as handle:
        reader = StreamReader(handle, kinds="trace")
        records = list(reader)
    assert reader.header["model"]["model_type"] == "monet" and len(records) == 6
    result = runner.invoke(eval_command, [str(published), "--data", str(corpus), "--max-length", "8"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(probe_command, ["neurons", str(published), str(corpus), "-o", str(tmp_path / "p.jsonl"),
                                           "--k", "1", "--domains", "law,med", "--concepts", "domain:law",
                                           "--min-count", "2"])
    # moe-probe neurons captures transformers' pluggable experts only: MONET's, of any layout, refused alike
    assert result.exit_code == 2 and "does not use transformers' pluggable experts" in result.output
    (tmp_path / "experts.json").write_text(json.dumps({"experts": {"1": [1, 6]}}))
    result = runner.invoke(mask_command, [str(published), "--experts", str(tmp_path / "experts.json"), "-o",
                                          str(tmp_path / "masked"), "-q"])
    assert result.exit_code == 0, result.output
    masked = tmp_path / "masked"  # remote mode: moe-mask's own code (checked byte for byte on load), never the release's
    assert all(path.read_text() != FOREIGN_CODE for path in masked.glob("*.py"))
    assert json.loads((masked / "config.json").read_text())["auto_map"] != PUBLISHED_AUTO_MAP
    assert load_model(masked, tokenizer=False, trust_remote_code=True).model.dtype == torch.bfloat16
    result = runner.invoke(tune_command, [str(published), "--data", str(corpus), "-o", str(tmp_path / "adapter"),
                                          "--experts", str(tmp_path / "experts.json"), "--steps", "2", "--batch-size",
                                          "2", "--seq-len", "12", "--lr", "0.05", "-q"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(tune_command, ["merge", str(tmp_path / "adapter"), "-o", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    merged = tmp_path / "merged"
    assert is_shipped(merged)  # the merge ships moetools' code and auto_map in place of the release's
    assert json.loads((merged / "config.json").read_text())["auto_map"] != PUBLISHED_AUTO_MAP
    assert load_model(merged, tokenizer=False).model.dtype == torch.bfloat16
