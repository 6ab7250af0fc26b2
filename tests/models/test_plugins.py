"""Model families from another package, found through the ``moetools.adapters`` entry points.

The package is written into tmp_path and made importable as an installed distribution would be
(a ``*.dist-info`` directory with ``entry_points.txt`` on ``PYTHONPATH``), without touching
moetools or the shared virtual environment. It registers two families transformers and moetools
do not know (``fake_moe``: the real OLMoE modeling code under another model_type; ``fake_oss``:
GPT-OSS's, whose router sits under another attribute and has a bias) with the Auto classes and
declares their adapters, and nothing else: moe-trace lists and traces them, moe-mask masks them in
each mode that applies (pruned, bias, remote; the directories give the logits of an independent
reference mask), and moe-probe causal ranks the experts of the one whose rule it supports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from moetools.plugins import checkout_entry_points
from moetools.streams import StreamReader
from tests.models.test_adapters import tiny_model
from tests.tiny_models import save_tiny_olmoe, save_word_tokenizer

REPO = Path(__file__).resolve().parents[2]
WORDS = ["the", "a", "of", "to", "and", "expert", "model", "token", "court", "patient", "theorem", "code"]

PLUGIN = '''
"""A third-party family for moetools: fake_moe (the OLMoE architecture under another name)."""
from transformers import (AutoConfig, AutoModelForCausalLM, GptOssConfig, GptOssForCausalLM, OlmoeConfig,
                          OlmoeForCausalLM)

from moetools.models import Adapter, RoutingRule


class FakeMoeConfig(OlmoeConfig):
    model_type = "fake_moe"


class FakeMoeForCausalLM(OlmoeForCausalLM):
    config_class = FakeMoeConfig


class FakeOssConfig(GptOssConfig):
    model_type = "fake_oss"


class FakeOssForCausalLM(GptOssForCausalLM):
    config_class = FakeOssConfig


for config, model in ((FakeMoeConfig, FakeMoeForCausalLM), (FakeOssConfig, FakeOssForCausalLM)):
    AutoConfig.register(config.model_type, config, exist_ok=True)
    AutoModelForCausalLM.register(config, model, exist_ok=True)


class FakeMoeAdapter(Adapter):
    """Fake-MoE: the plugin test's family, softmax over all experts then top-k."""

    name = "fake-moe"
    model_types = ("fake_moe",)
    rule = RoutingRule(scoring="softmax", order="softmax_then_topk", renormalize=False)


class FakeOssAdapter(Adapter):
    """Fake-OSS: the plugin test's family, router with bias, top-k on logits, softmax over the k."""

    name = "fake-oss"
    model_types = ("fake_oss",)
    router_attribute = "router"
    rule = RoutingRule(scoring="softmax", order="topk_then_softmax", router_bias=True)
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
    (info / "entry_points.txt").write_text("[moetools.adapters]\nfake-moe = fakemoe_plugin:FakeMoeAdapter\n"
                                           "fake-oss = fakemoe_plugin:FakeOssAdapter\n")
    return site


def relabel(directory, model_type: str, architecture: str):
    """Give a saved model a model_type only the plugin knows, its weights in the layout its modules hold
    (transformers converts a checkpoint's layout by model_type, which it does not know for the plugin's)."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(directory)
    model.save_pretrained(directory, save_original_format=False)
    config = json.loads((directory / "config.json").read_text())
    config["model_type"] = model_type
    config["architectures"] = [architecture]
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def fake_model(tmp_path_factory):
    """A tiny OLMoE saved to disk, relabelled model_type fake_moe (which only the plugin knows)."""
    directory = tmp_path_factory.mktemp("fake_moe")
    save_tiny_olmoe(directory, WORDS)
    return relabel(directory, "fake_moe", "FakeMoeForCausalLM")


@pytest.fixture(scope="module")
def fake_oss_model(tmp_path_factory):
    """A tiny GPT-OSS (random router biases) saved to disk, relabelled model_type fake_oss."""
    directory = tmp_path_factory.mktemp("fake_oss")
    tiny_model("gpt_oss").save_pretrained(directory)
    save_word_tokenizer(directory, WORDS)
    return relabel(directory, "fake_oss", "FakeOssForCausalLM")


def run(tool, *args, site=None, **env_extra):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    env.update(env_extra)
    command = [str(REPO / "bin" / tool)] if tool.startswith("moe-") else [sys.executable, "-c", tool]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, check=False, env=env,
                          timeout=300, stdin=subprocess.DEVNULL)


def moe_trace(*args, site=None):
    return run("moe-trace", *args, site=site)


def test_installed_plugin_adapter_is_listed(plugin_site):
    listed = moe_trace("--list-models", site=plugin_site)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()}
    assert rows["fake-moe"][1:3] == ["fake_moe", "fakemoe-plugin"]
    assert "Fake-MoE: the plugin test's family" in listed.stdout
    assert rows["olmoe"][1:3] == ["olmoe", "moetools"]  # the built-ins come the same way
    assert "fake-moe" not in moe_trace("--list-models").stdout  # only while the package is installed


@pytest.fixture(scope="module")
def fake_trace(plugin_site, fake_model, tmp_path_factory):
    """(moe-trace without the plugin, with it, the trace file) of a small corpus on fake_moe."""
    root = tmp_path_factory.mktemp("fake_trace")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": " ".join(WORDS[i:i + 6])}) + "\n"
                              for i in range(4)))
    output = root / "trace.msgpack.zst"
    without = moe_trace(fake_model, corpus, "--max-length", 16, "-o", output)
    without_output_exists = output.exists()
    traced = moe_trace(fake_model, corpus, "--max-length", 16, "-o", output, site=plugin_site)
    return without, without_output_exists, traced, output


def test_installed_plugin_adapter_traces_its_family(fake_trace):
    without, without_output_exists, traced, output = fake_trace
    assert without.returncode == 2 and not without_output_exists, without.stderr
    assert without.stderr.startswith("moe-trace: ") and without.stderr.count("\n") == 1
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


# -- moe-mask: every mode that applies, checked against an independent reference mask ----------------

#: case -> (fixture, {layer: masked ids}, the mode the rule gives)
MASKS = {"fake_moe-equal": ("fake_model", {0: [2, 7], 1: [2, 7]}, "pruned"),
         "fake_moe-unequal": ("fake_model", {0: [0, 3, 6], 1: [2]}, "remote"),
         "fake_oss-unequal": ("fake_oss_model", {0: [0, 3, 6], 1: [2]}, "bias")}

#: in a process that imports the plugin (as its users do): the base model under a router hook that
#: sets the masked logits to −∞ (softmax then top-k, or top-k then softmax), against the masked directory
REFERENCE = textwrap.dedent("""
    import json, sys, torch
    import fakemoe_plugin  # noqa: F401 - registers the families with the Auto classes
    from transformers import AutoModelForCausalLM
    cases, input_ids, out_file = json.loads(sys.argv[1]), torch.tensor(json.loads(sys.argv[2])), sys.argv[3]

    def reference(module, args, output, masked):
        logits = output[0].double().clone()
        logits[:, masked] = float("-inf")
        if module.__class__.__name__.startswith("GptOss"):
            top = logits.topk(module.top_k, dim=-1)
            return output[0], torch.softmax(top.values, dim=-1).to(output[0].dtype), top.indices
        weights, ids = torch.softmax(logits, dim=-1).topk(module.top_k, dim=-1)
        return output[0], weights.to(output[0].dtype), ids

    results = {}
    for name, (base, out, masked) in cases.items():
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
        with torch.no_grad():
            unmasked = model(input_ids).logits
        for layer, ids in masked.items():
            block = model.model.layers[int(layer)].mlp
            router = block.router if hasattr(block, "router") else block.gate
            router.register_forward_hook(lambda m, a, o, ids=ids: reference(m, a, o, ids))
        with torch.no_grad():
            expected = model(input_ids).logits
        remote = json.load(open(out + "/config.json"))["moe_mask"]["mode"] == "remote"
        try:
            AutoModelForCausalLM.from_pretrained(out)
            refused = False
        except Exception:
            refused = True
        masked_model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=remote, dtype=torch.float32)
        with torch.no_grad():
            got = masked_model.eval()(input_ids).logits
        results[name] = {"error": (got - expected).abs().max().item(), "effect": (expected - unmasked).abs().max().item(),
                         "refused_without_trust": refused}
    json.dump(results, open(out_file, "w"))
""")


@pytest.fixture(scope="module")
def plugin_masks(plugin_site, request, tmp_path_factory):
    """moe-mask of every case (with the plugin, and once without it); {case: (base, out, experts, result)}."""
    root = tmp_path_factory.mktemp("plugin_masks")
    cases, without = {}, None
    for name, (fixture, experts, _) in MASKS.items():
        base, out = request.getfixturevalue(fixture), root / name
        experts_file = root / f"{name}.json"
        experts_file.write_text(json.dumps({"experts": {str(k): v for k, v in experts.items()}}))
        if name == "fake_moe-unequal":
            without = (run("moe-mask", base, "--experts", experts_file, "-o", out), out.exists())
        cases[name] = (base, out, experts, run("moe-mask", base, "--experts", experts_file, "-o", out,
                                               site=plugin_site))
    return cases, without, root


def test_installed_plugin_families_are_masked_in_each_mode_that_applies(plugin_site, plugin_masks):
    cases, (without, written), root = plugin_masks
    assert without.returncode == 2 and not written, without.stderr  # moetools alone does not know the family
    assert without.stderr.startswith("moe-mask: ") and without.stderr.count("\n") == 1
    for name, (_, out, _, masked) in cases.items():
        assert masked.returncode == 0, masked.stderr
        record = json.loads((out / "config.json").read_text())["moe_mask"]
        assert (record["mode"], record["family"]) == (MASKS[name][2], name.split("-")[0]), name
        assert record["routing"]["router"] == ("router" if name.startswith("fake_oss") else "gate")
    pruned = json.loads((root / "fake_moe-equal" / "config.json").read_text())
    assert pruned["num_experts"] == 6 and "auto_map" not in pruned  # the family's own count key, resolved
    remote = json.loads((root / "fake_moe-unequal" / "config.json").read_text())
    assert remote["model_type"] == "moetools_masked_fake_moe"
    assert "from fakemoe_plugin import FakeMoeForCausalLM" in (root / "fake_moe-unequal" /
                                                               "modeling_moetools_mask.py").read_text()
    input_ids = [[2, 5, 9, 3, 12, 7, 4], [13, 6, 2, 8, 10, 11, 5]]
    checked = run(REFERENCE, json.dumps({name: (str(base), str(out), {str(k): v for k, v in experts.items()})
                                         for name, (base, out, experts, _) in cases.items()}),
                  json.dumps(input_ids), root / "results.json", site=plugin_site, HF_HUB_OFFLINE="1",
                  HF_MODULES_CACHE=str(root / "modules"))
    assert checked.returncode == 0, checked.stderr
    results = json.loads((root / "results.json").read_text())
    assert set(results) == set(MASKS)
    for name, result in results.items():
        assert result["effect"] > 1e-3, name  # the mask matters on these inputs
        assert result["error"] < 1e-5, (name, result)
        assert result["refused_without_trust"] == (MASKS[name][2] == "remote"), name


def test_installed_plugin_family_is_evaluated_masked_and_tuned(plugin_site, plugin_masks, fake_model, tmp_path):
    cases, _, _ = plugin_masks
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": " ".join(WORDS[i % 5:i % 5 + 7]), "domain": "ab"[i % 2]}) + "\n"
                            for i in range(8)))
    models = [fake_model, *(out for _, out, _, _ in cases.values())]
    evaluated = run("moe-eval", *models, "--data", data, "-o", tmp_path / "eval.jsonl", site=plugin_site)
    assert evaluated.returncode == 0, evaluated.stderr  # the remote directory: moe-mask's own code, trusted
    from moetools.streams.files import read_input

    records = list(read_input(str(tmp_path / "eval.jsonl"), kinds="eval", validate=True))
    modes = [(r["masked"] or {}).get("mode") for r in records if r["type"] == "model"]
    assert modes == [None, *(MASKS[name][2] for name in cases)]
    losses = {r["model"]: r["loss"] for r in records if r["type"] == "domain" and r["domain"] == "a"}
    assert len(losses) == 4 and losses[0] not in (losses[1], losses[2])  # fake_moe's masks change its loss
    experts = tmp_path / "experts.json"
    experts.write_text(json.dumps({"experts": {"1": [2, 4]}}))
    tuned = run("moe-tune", fake_model, "--data", data, "--mode", "experts", "--experts", experts, "-o",
                tmp_path / "tuned", "--steps", "2", "--seq-len", "8", "--batch-size", "4", site=plugin_site)
    assert tuned.returncode == 0, tuned.stderr
    assert (tmp_path / "tuned" / "adapter.safetensors").is_file()


# -- moe-probe causal: supported from the routing rule, not from a list of families --------------------

def test_installed_plugin_family_is_probed_and_the_other_refused_by_its_rule(plugin_site, fake_trace,
                                                                               fake_oss_model, tmp_path):
    from moetools.streams.files import open_stream_writer, read_input

    _, _, traced, trace = fake_trace
    assert traced.returncode == 0, traced.stderr
    with open(trace, "rb") as handle:
        identity = StreamReader(handle, kinds="trace").header["model"]
    labels = tmp_path / "labels.jsonl"
    with open_stream_writer(str(labels), "labels", "jsonl", True, model=identity) as writer:
        for layer in (0, 1):
            for expert in range(8):
                writer.write({"type": "label", "layer": layer, "expert": expert, "status": "ok",
                              "explanation": f"expert {expert}: the words", "details": {
                                  "tokens": [{"piece": "court"}, {"piece": "patient"}], "logit_lens": ["theorem"]}})
    model = Path(identity["path"])
    out = tmp_path / "causal.jsonl"
    probed = run("moe-probe", "causal", model, labels, "--backend", "offline", "-o", out, site=plugin_site)
    assert probed.returncode == 0, probed.stderr
    causal = [r for r in read_input(str(out), kinds="probe", validate=True) if r["type"] == "causal"]
    assert len(causal) == 16 and all(1 <= r["rank"] <= 8 for r in causal)
    assert sorted((r["layer"], r["expert"]) for r in causal) == [(layer, e) for layer in (0, 1) for e in range(8)]
    refused = run("moe-probe", "causal", fake_oss_model, labels, "--backend", "offline", "-o", tmp_path / "x.jsonl",
                  site=plugin_site)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "softmax over all experts then take the top-k" in refused.stderr and "fake_oss" in refused.stderr


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
