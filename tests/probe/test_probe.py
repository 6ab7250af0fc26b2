"""moe-probe neurons: h captured inside the experts computation, planted concepts found at k = 1,
the document split, skip counting, the CLI end to end, the probe stream's conformance files."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from moetools.cli.probe import command as moe_probe
from moetools.errors import FormatError
from moetools.models.registry import adapter_for
from moetools.probe.hidden import HiddenCapture
from moetools.probe.neurons import ProbeOptions, collect, is_test_document, probe_records
from moetools.probe.stats import Reservoir
from moetools.streams import StreamReader
from tests.models.test_adapters import FAMILIES, tiny_model
from tests.tiny_models import save_word_tokenizer

EXAMPLES = Path(__file__).resolve().parents[2] / "formats" / "examples" / "probe"
DIGITS = [str(number) for number in range(10)]
WORDS = DIGITS + [f"w{index}" for index in range(40)]  # ids 2..11 are digits, 12..51 plain words
PLANTED = 5  # the hidden neuron that carries "digit" by construction


def expert_hidden(experts, expert: int, x: torch.Tensor) -> torch.Tensor:
    """h = act(W_gate x) ⊙ (W_up x) recomputed from the fused weights in fp64 (independent of the kernels)."""
    x = x.double()
    if getattr(experts, "is_transposed", False):  # GPT-OSS: [E, d, 2I] interleaved gate/up, biases, clamped swiglu
        gate_up = x @ experts.gate_up_proj[expert].double() + experts.gate_up_proj_bias[expert].double()
        gate, up = gate_up[..., ::2].clamp(max=experts.limit), gate_up[..., 1::2]
        up = up.clamp(min=-experts.limit, max=experts.limit)
        return (up + 1) * (gate * torch.sigmoid(gate * experts.alpha))
    gate, up = (x @ experts.gate_up_proj[expert].double().T).chunk(2, dim=-1)  # [E, 2I, d]
    return experts.act_fn(gate) * up


@pytest.mark.parametrize("family", FAMILIES)
def test_captured_hidden_equals_recomputation_from_weights(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    input_ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    inputs, hooks = {}, []
    for layer in adapter.moe_layers():
        hooks.append(layer.experts.register_forward_pre_hook(
            lambda module, args, index=layer.index: inputs.__setitem__(index, (args[0], args[1]))))
    with torch.no_grad():
        plain = model(input_ids).logits
        with HiddenCapture(model, adapter) as capture:
            captured_logits = model(input_ids).logits
            layers = capture.take()
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(captured_logits, plain, rtol=0, atol=1e-6)  # the same experts computation
    experts = {layer.index: layer.experts for layer in adapter.moe_layers()}
    assert [index for index, _, _ in layers] == sorted(experts)
    for index, ids, hidden in layers:
        x, routed = inputs[index]
        assert torch.equal(ids, routed.cpu())
        for token in range(ids.shape[0]):
            for slot in range(ids.shape[1]):
                expected = expert_hidden(experts[index], int(ids[token, slot]), x[token])
                torch.testing.assert_close(hidden[token, slot].double(), expected, rtol=1e-5, atol=1e-5)


def plant_digit_neuron(model) -> None:
    """Embedding dim 0 = +1 on digit tokens, −1 elsewhere; attention writes nothing; neuron PLANTED of every
    FFN (each expert, or the dense MLP) reads dim 0 through gate and up, so h_PLANTED is large on digits only."""
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight  # (V, d)
        embedding.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
        embedding[:, 0] = -1.0
        embedding[2:12, 0] = 1.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            mlp = layer.mlp
            if hasattr(mlp, "experts"):
                size = mlp.experts.gate_up_proj.shape[1] // 2  # [E, 2I, d]
                for rows in (PLANTED, size + PLANTED):
                    mlp.experts.gate_up_proj[:, rows, :] = 0.0
                    mlp.experts.gate_up_proj[:, rows, 0] = 4.0
            else:
                for projection in (mlp.gate_proj, mlp.up_proj):  # (I, d)
                    projection.weight[PLANTED] = 0.0
                    projection.weight[PLANTED, 0] = 4.0


def save_planted(directory: Path, dense: bool) -> Path:
    common = {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 64, "pad_token_id": 1, "bos_token_id": None,
              "eos_token_id": None}
    if dense:
        config = transformers.LlamaConfig(intermediate_size=48, **common)
    else:
        config = transformers.OlmoeConfig(intermediate_size=48, num_experts=4, num_experts_per_tok=2, **common)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    plant_digit_neuron(model)
    model.save_pretrained(directory)
    save_word_tokenizer(directory, WORDS)
    return directory


def write_corpus(path: Path, documents: int = 80, length: int = 30, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(documents):
            text = " ".join(rng.choice(DIGITS) if rng.random() < 0.25 else rng.choice(WORDS[10:])
                            for _ in range(length))
            handle.write(json.dumps({"id": f"doc{index}", "text": text,
                                     "domain": "code" if index % 2 else "legal"}) + "\n")
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    return {"moe": save_planted(root / "moe", dense=False), "dense": save_planted(root / "dense", dense=True),
            "corpus": write_corpus(root / "corpus.jsonl"), "root": root}


def run_collect(path, corpus, **options):
    from moetools.corpus.documents import read_corpus
    from moetools.models.loader import load_model

    loaded = load_model(path, require_moe=False)
    probe_options = ProbeOptions(concepts=("digit", "domain:code"), min_count=20, **options)
    labeller, layers, summary = collect(loaded.model, loaded.tokenizer, loaded.adapter, read_corpus(corpus),
                                        probe_options)
    records = probe_records(labeller, layers, probe_options, summary, loaded.adapter is None)
    return layers, summary, records


@pytest.mark.parametrize("arch", ["moe", "dense"])
def test_planted_neuron_is_found_at_k1_and_shuffled_labels_fall_to_chance(planted, arch):
    _, _, records = run_collect(planted[arch], planted["corpus"], ks=(1, 4))
    digit = [r for r in records if r["type"] == "probe" and r["concept"] == "digit" and r["k"] == 1]
    assert digit and all(r["neurons"] == [PLANTED] for r in digit)  # the mean difference picks the planted one
    assert all(r["test_f1"] > 0.97 for r in digit)
    assert all((r["expert"] is None) == (arch == "dense") for r in digit)
    best = {(r["concept"], r["k"]): r for r in records if r["type"] == "best"}
    assert best[("digit", 1)]["test_f1"] > 0.97
    _, _, control = run_collect(planted[arch], planted["corpus"], ks=(1, 4), shuffle_labels=True)
    shuffled = {(r["concept"], r["k"]): r for r in control if r["type"] == "best"}
    assert shuffled[("digit", 1)]["test_f1"] < 0.6  # 25 % positives: chance F1 is about 0.3-0.4


def test_split_is_by_document_and_about_a_quarter(planted):
    layers, summary, _ = run_collect(planted["moe"], planted["corpus"], ks=(1,))
    test_ids = {f"doc{i}" for i in range(80) if is_test_document(f"doc{i}", 0, 0.25)}
    assert summary.test_documents == len(test_ids) and summary.test_tokens == 30 * len(test_ids)
    stats = layers[0]
    # every routed (token, slot) row is counted on its document's side only: test rows = test tokens × top-k
    assert stats.count[1].sum() == summary.test_tokens * 2
    assert stats.count[0].sum() == (summary.tokens - summary.test_tokens) * 2
    fraction = np.mean([is_test_document(f"id-{i}", 7, 0.25) for i in range(4000)])
    assert 0.22 < fraction < 0.28


def test_reservoir_keeps_at_most_capacity_and_samples_uniformly():
    reservoir = Reservoir(1, 100, 1, 1, np.random.default_rng(0))
    for start in range(0, 10000, 500):
        rows = np.arange(start, start + 500, dtype=np.float32)[:, None]
        reservoir.add(0, rows, np.zeros((500, 1), dtype=bool))
    hidden, _ = reservoir.rows(0)
    assert hidden.shape == (100, 1) and reservoir.seen[0] == 10000
    assert 3000 < hidden.mean() < 7000 and len(np.unique(hidden)) == 100  # spread over the whole stream


def test_cli_writes_a_valid_stream_and_counts_skips(planted, run_tool, tmp_path):
    out = tmp_path / "probe.jsonl"
    result = run_tool(moe_probe, ["neurons", str(planted["moe"]), str(planted["corpus"]), "-o", str(out),
                                  "--k", "1,2", "--concepts", "digit,domain:code", "--min-count", "20"])
    assert result.exit_code == 0, result.stderr
    assert "digit" in result.stderr and "probes fitted" in result.stderr
    with open(out, "rb") as handle:
        reader = StreamReader(handle, validate=True)
        records = list(reader)
    assert reader.header["arch"] == "moe" and reader.header["ks"] == [1, 2]
    best = {(r["concept"], r["k"]): r for r in records if r["type"] == "best"}
    assert best[("digit", 1)]["test_f1"] > 0.97
    # the dense baseline through the same command: units are layers, expert is null
    out = tmp_path / "dense.jsonl"
    result = run_tool(moe_probe, ["neurons", str(planted["dense"]), str(planted["corpus"]), "-o", str(out),
                                  "--k", "1", "--concepts", "digit", "--min-count", "20"])
    assert result.exit_code == 0, result.stderr
    with open(out, "rb") as handle:
        reader = StreamReader(handle, validate=True)
        records = list(reader)
    assert reader.header["arch"] == "dense" and reader.header["model"]["model_type"] == "llama"
    assert [(r["expert"], r["neurons"]) for r in records if r["type"] == "probe"] == [(None, [PLANTED])]
    # a min-count no expert reaches: every (concept, layer, expert) skipped and counted, still a valid stream
    out = tmp_path / "none.jsonl"
    result = run_tool(moe_probe, ["neurons", str(planted["moe"]), str(planted["corpus"]), "-o", str(out),
                                  "--k", "1", "--concepts", "digit,domain:code", "--min-count", "100000"])
    assert result.exit_code == 0 and "nothing was probed" in result.stderr
    with open(out, "rb") as handle:
        reader = StreamReader(handle, validate=True)
        assert list(reader) == []
    assert reader.ends[-1]["summary"]["skipped"]["few-examples"] == 2 * 1 * 4  # concepts × layers × experts


def test_concept_file_adds_the_users_concept_and_refuses_misaligned_positions(planted, run_tool, tmp_path):
    labels = tmp_path / "labels.jsonl"
    rows = []
    for line in planted["corpus"].read_text().splitlines():  # word-level tokenizer: token i = word i
        document = json.loads(line)
        positions = [i for i, word in enumerate(document["text"].split()) if word in DIGITS]
        rows.append(json.dumps({"id": document["id"], "labels": {"my_digits": positions}}))
    labels.write_text("\n".join(rows) + "\n")
    out = tmp_path / "probe.jsonl"
    result = run_tool(moe_probe, ["neurons", str(planted["moe"]), str(planted["corpus"]), "-o", str(out), "--k", "1",
                                  "--concepts", "my_digits", "--concept-file", str(labels), "--min-count", "20"])
    assert result.exit_code == 0, result.stderr
    with open(out, "rb") as handle:
        records = list(StreamReader(handle, validate=True))
    best = [r for r in records if r["type"] == "best"]
    assert best[0]["concept"] == "my_digits" and best[0]["test_f1"] > 0.97
    assert all(r["neurons"] == [PLANTED] for r in records if r["type"] == "probe")
    labels.write_text(json.dumps({"id": "doc0", "labels": {"my_digits": [30]}}) + "\n")  # doc0 has 30 tokens
    result = run_tool(moe_probe, ["neurons", str(planted["moe"]), str(planted["corpus"]), "-o", str(out),
                                  "--concept-file", str(labels), "--force"])
    assert result.exit_code == 2 and "does not align" in result.stderr
    labels.write_text('{"id": "doc0", "labels": {"digit": [1]}}\n')
    result = run_tool(moe_probe, ["neurons", str(planted["moe"]), str(planted["corpus"]), "--concept-file", str(labels)])
    assert result.exit_code == 2 and "built-in" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--k", "0"], "--k"),
    (["--concepts", "colour"], "unknown concept"),
    (["--test-fraction", "1.5"], "--test-fraction"),
])
def test_bad_options_exit_2(planted, run_tool, args, message):
    result = run_tool(moe_probe, ["neurons", str(planted["moe"]), str(planted["corpus"]), *args])
    assert result.exit_code == 2 and message in result.stderr


def test_empty_corpus_is_empty_input(planted, run_tool, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = run_tool(moe_probe, ["neurons", str(planted["moe"]), str(empty)])
    assert result.exit_code == 3 and f"{empty}: empty input: no documents" in result.stderr


def test_cli_module_does_not_import_torch():
    code = "import sys, moetools.cli.probe; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("path", sorted((EXAMPLES / "valid").glob("*.jsonl")), ids=lambda p: p.name)
def test_valid_examples_pass(path):
    with open(path, "rb") as handle:
        list(StreamReader(handle, validate=True))


@pytest.mark.parametrize("path", sorted((EXAMPLES / "invalid").glob("*.jsonl")), ids=lambda p: p.name)
def test_invalid_examples_fail(path):
    with open(path, "rb") as handle, pytest.raises(FormatError):
        list(StreamReader(handle, validate=True))
