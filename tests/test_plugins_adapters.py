"""A model-family adapter from another package, found through the ``moetools.adapters`` entry points.

The package is written into tmp_path and made importable as an installed distribution would be
(a ``*.dist-info`` directory with ``entry_points.txt`` on ``PYTHONPATH``), without touching
moetools or the shared virtual environment. It registers a family transformers and moetools do
not know (``fake_moe``: a subclass of the real OLMoE modeling code under another model_type)
with the Auto classes and declares its adapter; moe-trace then lists and traces it.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import transformers
from tiny_models import save_tiny_olmoe

from moetools.plugins import checkout_entry_points
from moetools.streams import StreamReader

REPO = Path(__file__).resolve().parent.parent
WORDS = ["the", "a", "of", "to", "and", "expert", "model", "token", "court", "patient", "theorem", "code"]

PLUGIN = '''
"""A third-party family for moetools: fake_moe (the OLMoE architecture under another name)."""
from transformers import AutoConfig, AutoModelForCausalLM, OlmoeConfig, OlmoeForCausalLM

from moetools.models import Adapter, RoutingRule


class FakeMoeConfig(OlmoeConfig):
    model_type = "fake_moe"


class FakeMoeForCausalLM(OlmoeForCausalLM):
    config_class = FakeMoeConfig


AutoConfig.register("fake_moe", FakeMoeConfig, exist_ok=True)
AutoModelForCausalLM.register(FakeMoeConfig, FakeMoeForCausalLM, exist_ok=True)


class FakeMoeAdapter(Adapter):
    """Fake-MoE: the plugin test's family, softmax over all experts then top-k."""

    name = "fake-moe"
    model_types = ("fake_moe",)
    rule = RoutingRule(scoring="softmax", order="softmax_then_topk", renormalize=False)
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """A directory that holds the package and its dist-info, as pip would install it."""
    site = tmp_path_factory.mktemp("site")
    (site / "fakemoe_plugin").mkdir()
    (site / "fakemoe_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "fakemoe_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakemoe-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[moetools.adapters]\nfake-moe = fakemoe_plugin:FakeMoeAdapter\n")
    return site


@pytest.fixture(scope="module")
def fake_model(tmp_path_factory):
    """A tiny OLMoE saved to disk, relabelled model_type fake_moe (which only the plugin knows)."""
    directory = tmp_path_factory.mktemp("fake_moe")
    save_tiny_olmoe(directory, WORDS)
    # the tensors as the modules hold them (fused experts): transformers converts OLMoE's on-disk
    # per-expert layout by model_type, and knows no conversion for fake_moe (the loader would refuse
    # the per-expert tensors as unexpected and the fused ones as missing)
    transformers.AutoModelForCausalLM.from_pretrained(directory).save_pretrained(directory, save_original_format=False)
    config = json.loads((directory / "config.json").read_text())
    config["model_type"] = "fake_moe"
    config["architectures"] = ["FakeMoeForCausalLM"]
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def moe_trace(*args, site=None):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run([str(REPO / "bin" / "moe-trace"), *map(str, args)], capture_output=True, text=True, check=False,
                          env=env, timeout=300)


def test_installed_plugin_adapter_is_listed(plugin_site):
    listed = moe_trace("--list-models", site=plugin_site)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()}
    assert rows["fake-moe"][1:3] == ["fake_moe", "fakemoe-plugin"]
    assert "Fake-MoE: the plugin test's family" in listed.stdout
    assert rows["olmoe"][1:3] == ["olmoe", "moetools"]  # the built-ins come the same way
    assert "fake-moe" not in moe_trace("--list-models").stdout  # only while the package is installed


def test_installed_plugin_adapter_traces_its_family(plugin_site, fake_model, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": " ".join(WORDS[i:i + 6])}) + "\n"
                              for i in range(4)))
    output = tmp_path / "trace.msgpack.zst"
    without = moe_trace(fake_model, corpus, "--max-length", 16, "-o", output)
    assert without.returncode == 2 and not output.exists(), without.stderr
    assert without.stderr.startswith("moe-trace: ") and without.stderr.count("\n") == 1

    traced = moe_trace(fake_model, corpus, "--max-length", 16, "-o", output, site=plugin_site)
    assert traced.returncode == 0, traced.stderr
    with open(output, "rb") as handle:
        reader = StreamReader(handle, kinds="trace", validate=True)
        records = list(reader)
    assert reader.header["model"]["model_type"] == "fake_moe"
    assert reader.header["routing"]["scoring"] == "softmax" and reader.header["num_experts"] == 8
    assert len(records) == 4
    for record in records:
        experts = np.asarray(record["experts"])
        assert experts.shape == (2, len(record["tokens"]), 2) and experts.max() < 8
        assert np.all(np.asarray(record["gates"], dtype=np.float32) > 0)


def test_checkout_without_installed_metadata_reads_the_builtins_from_pyproject(monkeypatch):
    """bin/ launchers run an uninstalled checkout: the same declarations come from pyproject.toml."""
    from moetools import plugins
    from moetools.models import registry

    monkeypatch.setattr(plugins, "entry_points", lambda group: [])
    monkeypatch.setattr(registry, "_ENTRY_POINT_ADAPTERS", None)
    names = [row["name"] for row in registry.adapter_table()]
    declared = [entry.name for entry in checkout_entry_points(registry.ENTRY_POINT_GROUP)]
    assert sorted(names) == sorted(declared) and {"olmoe", "deepseek_v3", "gpt_oss", "monet"} <= set(names)


def test_broken_plugin_entry_point_is_a_model_error_naming_it(monkeypatch):
    from importlib.metadata import EntryPoint

    from moetools import plugins
    from moetools.errors import ModelError
    from moetools.models import registry

    broken = EntryPoint("broken", "no_such_module_here:Adapter", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [broken])
    monkeypatch.setattr(registry, "_ENTRY_POINT_ADAPTERS", None)
    with pytest.raises(ModelError, match=r"cannot load adapter entry point broken = 'no_such_module_here:Adapter'"):
        registry.registered_adapters()
    not_adapter = EntryPoint("odd", "json:dumps", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [not_adapter])
    with pytest.raises(ModelError, match="is not an Adapter subclass"):
        registry.registered_adapters()
