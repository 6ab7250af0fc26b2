"""Every tool on checkpoints in the shapes models are published in (tests/published_shapes.py: the
published config.json of each of 8 families with only the sizes scaled down, bf16, sharded with an
index): moe-trace exact against a recomputation from the model's own router and expert weights,
moe-mask in each mode that applies, moe-tune (experts, lora-experts) and merge, moe-eval, moe-probe
neurons on every family and moe-probe causal where the routing rule allows its attribution. What the
tools write keeps the input's dtype, tensor for tensor, and its sharding, and the index lists every
tensor."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner

from moetools.models.loader import load_model
from moetools.streams import StreamReader
from tests.models.test_adapters import expert_output, independent_probabilities
from tests.published_shapes import (
    FAMILIES,
    PUBLISHED,
    WORDS,
    checkpoint_tensors,
    index_tensors,
    save_published_shape,
    shard_files,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root, made = tmp_path_factory.mktemp("published"), {}

    def get(family):
        if family not in made:
            save_published_shape(root / family, family)
            made[family] = root / family
        return made[family]

    return get


def write_corpus(path, documents=6, seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w") as handle:
        for number in range(documents):
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(4, 14))))
            handle.write(json.dumps({"id": f"d{number}", "text": text, "domain": ["law", "med"][number % 2]}) + "\n")
    return path


def check_written_like(source, out, *, same_files: bool):
    """``out`` holds the dtypes of ``source`` tensor for tensor, is sharded (>= 3 files, or as many
    as the source), and its index lists exactly the tensors its files hold."""
    mine, theirs = checkpoint_tensors(out), checkpoint_tensors(source)
    assert set(index_tensors(out)) == set(mine)
    assert all(index_tensors(out)[name] == file for name, (file, _) in mine.items())
    written = sum(t.numel() * t.element_size() for t in _all_tensors(out).values())
    assert json.loads((out / "model.safetensors.index.json").read_text())["metadata"]["total_size"] == written
    source_dtypes = {dtype for _, dtype in theirs.values()}
    for name, (_, dtype) in mine.items():
        assert dtype == (theirs[name][1] if name in theirs else "BF16"), (name, dtype)
    assert {dtype for _, dtype in mine.values()} <= source_dtypes
    files = shard_files(out)
    assert len(files) == len(shard_files(source)) if same_files else len(files) >= 3, files


def _all_tensors(directory):
    from safetensors.torch import load_file

    tensors = {}
    for path in shard_files(directory):
        tensors.update(load_file(str(path)))
    return tensors


# -- the fixtures themselves ------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_fixture_is_the_published_shape(checkpoint, family):
    directory = checkpoint(family)
    assert len(shard_files(directory)) >= 3
    tensors = checkpoint_tensors(directory)
    assert set(index_tensors(directory)) == set(tensors)
    assert {dtype for _, dtype in tensors.values()} <= {"BF16", "F32"}
    assert sum(dtype == "BF16" for _, dtype in tensors.values()) > 0.9 * len(tensors)
    config = transformers.AutoConfig.from_pretrained(directory)
    for key, value in PUBLISHED[family][1].items():
        if key in ("rope_scaling", "rope_theta"):  # transformers 5 keeps them in rope_parameters
            stored = config.rope_parameters
            expected = {"rope_theta": value} if key == "rope_theta" else \
                {k: v for k, v in value.items() if k in ("factor", "beta_fast", "beta_slow", "mscale",
                                                         "mscale_all_dim", "original_max_position_embeddings")}
            assert all(stored.get(k) == v for k, v in expected.items()), (key, stored)
        elif key != "architectures":
            assert getattr(config, key) == value, key
    loaded = load_model(directory)  # the loader refuses missing or unexpected weights
    counts = {"olmoe": (64, 8), "mixtral": (8, 2), "qwen2_moe": (60, 4), "qwen3_moe": (128, 8),
              "deepseek_v2": (64, 6), "deepseek_v3": (256, 8), "ernie4_5_moe": (64, 6), "gpt_oss": (32, 4)}
    assert {(layer.num_experts, layer.top_k) for layer in loaded.adapter.moe_layers()} == {counts[family]}
    dense = {"deepseek_v2": [0], "deepseek_v3": [0, 1, 2], "ernie4_5_moe": [0]}.get(family, [])
    assert loaded.adapter.dense_layers() == dense


# -- moe-trace -------------------------------------------------------------------------------------

ROUTING = {  # what the trace header says of each published router
    "deepseek_v3": {"scoring": "sigmoid", "group_limited": True, "score_bias": True, "scaling": 2.5},
    "deepseek_v2": {"scoring": "softmax", "group_limited": False, "renormalize": False},
    "qwen3_moe": {"renormalize": True}, "olmoe": {"renormalize": False}, "qwen2_moe": {"renormalize": False},
    "gpt_oss": {"router_bias": True}, "ernie4_5_moe": {"score_bias": True},
}


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_trace_equals_the_recomputation(checkpoint, family, tmp_path):
    from moetools.cli.trace import command

    directory = checkpoint(family)
    out = tmp_path / "trace.msgpack.zst"
    result = CliRunner().invoke(command, [str(directory), str(write_corpus(tmp_path / "c.jsonl")), "--max-length",
                                          "12", "--batch-size", "1", "--precision", "24", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with open(out, "rb") as handle:
        reader = StreamReader(handle, kinds="trace")
        records, header = list(reader), reader.header
    assert "quantized_weights" not in header  # bf16 weights: nothing dequantized
    for key, value in ROUTING.get(family, {}).items():
        assert header["routing"][key] == value, (key, header["routing"])
    loaded = load_model(directory, tokenizer=False)
    layers = loaded.adapter.moe_layers()
    assert header["layers"] == [layer.index for layer in layers]
    seen = {"router": [], "experts": []}
    hooks = [layer.router.register_forward_hook(lambda m, a, o: seen["router"].append((a[0], o))) for layer in layers]
    hooks += [layer.experts.register_forward_pre_hook(lambda m, a: seen["experts"].append((a[0], a[2]))) for layer in
              layers]
    try:
        for record in records:
            seen["router"].clear(), seen["experts"].clear()
            with torch.no_grad():
                loaded.model(torch.tensor(record["tokens"].astype(np.int64))[None])
            for position, (layer, (hidden, (logits, gates, ids)), x) in enumerate(
                    zip(layers, seen["router"], seen["experts"])):
                assert np.array_equal(record["experts"][position], ids.numpy()), (family, layer.index)
                applied = x[1]  # the gates the experts receive (--precision 24: stored as float32)
                assert np.array_equal(record["gates"][position], applied.float().numpy())
                assert torch.equal(applied, gates)
                probs = independent_probabilities(family, logits)
                assert np.allclose(record["prob_sum"][position], probs.sum(0).numpy(), rtol=1e-3, atol=1e-3)
                with torch.no_grad():  # g * ||E(x)|| from the bf16 weights in float64 (transformers: bf16 kernels)
                    expected = torch.tensor([[float(applied[t, s].double() * expert_output(
                        layer.experts, int(ids[t, s]), x[0].reshape(-1, x[0].shape[-1])[t]).norm())
                        for s in range(ids.shape[1])] for t in range(ids.shape[0])])
                assert np.allclose(record["contribution"][position], expected.numpy(), rtol=3e-2, atol=1e-3)
    finally:
        for hook in hooks:
            hook.remove()


# -- moe-mask --------------------------------------------------------------------------------------

def mask_sets(family, layers, kind):
    if kind == "equal":  # DeepSeek-V3: one expert of each of its 8 groups of 32
        ids = list(range(0, 256, 32)) if family == "deepseek_v3" else [1, 5]
        return {str(layer): ids for layer in layers}
    return {str(layer): [[0, 3, 6], [2], [4, 7], [9]][n] for n, layer in enumerate(layers)}


MODES = [(family, kind) for family in FAMILIES for kind in ("equal", "unequal")]


@pytest.mark.slow
@pytest.mark.parametrize("family,kind", MODES)
def test_mask_keeps_dtype_and_sharding(checkpoint, family, kind, tmp_path):
    from moetools.mask import mask_directory, masked

    directory = checkpoint(family)
    base = load_model(directory, tokenizer=False)
    layers = [layer.index for layer in base.adapter.moe_layers()]
    sets = mask_sets(family, layers, kind)
    (tmp_path / "experts.json").write_text(json.dumps({"experts": sets}))
    record = mask_directory(directory, tmp_path / "experts.json", tmp_path / "masked")
    expected_mode = "pruned" if kind == "equal" else \
        ("bias" if family in ("gpt_oss", "deepseek_v3", "ernie4_5_moe") else "remote")
    assert record["mode"] == expected_mode
    check_written_like(directory, tmp_path / "masked", same_files=expected_mode != "remote")
    out = load_model(tmp_path / "masked", tokenizer=False, trust_remote_code=expected_mode == "remote").model
    assert out.dtype == torch.bfloat16
    input_ids = torch.randint(2, 62, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), masked(base.model, {int(k): v for k, v in sets.items()}):
        reference = base.model(input_ids).logits.float()
    with torch.no_grad():
        logits = out(input_ids).logits.float()
    # equal to 1e-5 for most; a few bf16 units where fewer experts are summed in another order
    torch.testing.assert_close(logits, reference, rtol=0, atol=1e-2)
    agree = (logits.argmax(-1) == reference.argmax(-1)).float().mean()
    assert agree >= 0.9, agree


# -- moe-tune and merge ----------------------------------------------------------------------------

def most_routed(loaded, layer, corpus) -> list[int]:
    """The two experts of ``layer`` the corpus's tokens are routed to most."""
    seen = []
    hook = layer.router.register_forward_hook(lambda m, a, o: seen.append(o[2].reshape(-1)))
    try:
        with torch.no_grad():
            for line in corpus.read_text().splitlines():
                loaded.model(torch.tensor([loaded.tokenizer(json.loads(line)["text"])["input_ids"]]))
    finally:
        hook.remove()
    return sorted(int(i) for i in torch.cat(seen).bincount().topk(2).indices)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["experts", "lora-experts"])
@pytest.mark.parametrize("family", FAMILIES)
def test_tune_and_merge_keep_dtype_and_sharding(checkpoint, family, mode, tmp_path):
    from moetools.tune import TuneOptions, merge
    from moetools.tune.loop import Tuner
    from moetools.tune.slices import experts_view

    directory = checkpoint(family)
    base = load_model(directory)
    layer = base.adapter.moe_layers()[-1]
    data = write_corpus(tmp_path / "data.jsonl", documents=12, seed=1)
    chosen = most_routed(base, layer, data)  # of 256 experts, a chosen one may otherwise see no token
    (tmp_path / "experts.json").write_text(json.dumps({"experts": {str(layer.index): chosen}}))
    tuner = Tuner(TuneOptions(model=str(directory), data=str(data), output=str(tmp_path / "adapter"), mode=mode,
                              experts=str(tmp_path / "experts.json"), steps=2, batch_size=2, seq_len=12, lr=5e-2,
                              warmup=0, eval_every=2, checkpoint_every=2, lora_rank=2))
    tuner.run()
    merge(tmp_path / "adapter", tmp_path / "merged")
    check_written_like(directory, tmp_path / "merged", same_files=False)
    merged = load_model(tmp_path / "merged", tokenizer=False).model
    assert merged.dtype == torch.bfloat16
    before, after = base.model.state_dict(), merged.state_dict()
    slices = {piece.name: piece for piece in tuner.module.slices.slices if tuner.module.slices.trained(piece)}
    assert slices
    moved = False
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype, name
        if name not in slices:
            assert torch.equal(after[name], tensor), name
            continue
        piece = slices[name]
        old, new = (experts_view(t, piece.dim, piece.block, piece.num) for t in (tensor, after[name]))
        for expert in range(piece.num):
            if expert not in piece.ids:
                assert torch.equal(old[expert], new[expert]), (name, expert)
        moved = moved or any(not torch.equal(old[e], new[e]) for e in piece.ids)
    assert moved
    tuned = tuner.model.state_dict()  # the merged weights are the tuned ones, rounded to the base's bf16
    for name in slices:
        torch.testing.assert_close(after[name].float(), tuned[name].float().to(torch.bfloat16).float(),
                                   rtol=1e-2, atol=1e-3)


# -- moe-eval --------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_eval_equals_the_direct_loss(checkpoint, family, tmp_path):
    from moetools.cli.eval import command

    directory = checkpoint(family)
    corpus = write_corpus(tmp_path / "c.jsonl", documents=4, seed=2)
    result = CliRunner().invoke(command, [str(directory), "--data", str(corpus), "--max-length", "8",
                                          "--batch-tokens", "8"])
    assert result.exit_code == 0, result.output
    records = [r for r in StreamReader(io.BytesIO(result.stdout_bytes), validate=True) if r["type"] == "domain"]
    loaded = load_model(directory)
    sums = {}
    for line in corpus.read_text().splitlines():
        doc = json.loads(line)
        ids = loaded.tokenizer(doc["text"])["input_ids"]
        for start in range(0, len(ids), 8):
            window = torch.tensor([ids[start:start + 8]])
            if window.shape[1] < 2:
                continue
            with torch.no_grad():
                loss = loaded.model(window, labels=window).loss
            entry = sums.setdefault(doc["domain"], [0.0, 0])
            entry[0] += float(loss) * (window.shape[1] - 1)
            entry[1] += window.shape[1] - 1
    assert {r["domain"] for r in records} == set(sums)
    for r in records:
        total, tokens = sums[r["domain"]]
        assert r["tokens"] == tokens
        assert math.isclose(r["loss"], total / tokens, rel_tol=1e-5), (r["loss"], total / tokens)


# -- moe-probe -------------------------------------------------------------------------------------

#: the families whose router moe-probe causal attributes: a softmax over all experts then the top-k,
#: no score bias, no group limit (GPT-OSS: top-k then softmax; DeepSeek-V3: sigmoid, group-limited,
#: score bias; ERNIE: score bias) -- the rule moetools.probe.dla.check_supported reads from the adapter
CAUSAL = ("olmoe", "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2")


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_probe_neurons_captures_the_experts_hidden_vectors(checkpoint, family, tmp_path):
    from moetools.cli.probe import command
    from moetools.probe.hidden import HiddenCapture
    from tests.probe.test_probe import expert_hidden

    directory = checkpoint(family)
    corpus = write_corpus(tmp_path / "c.jsonl", documents=24, seed=4)
    out = tmp_path / "probe.jsonl"
    result = CliRunner().invoke(command, ["neurons", str(directory), str(corpus), "-o", str(out), "--k", "1,2",
                                          "--domains", "law,med", "--concepts", "line_start,domain:law", "--min-count", "2",
                                          "--max-length", "16"])
    assert result.exit_code == 0, result.output
    with open(out, "rb") as handle:
        reader = StreamReader(handle, validate=True)
        records = list(reader)
    loaded = load_model(directory)
    layers = loaded.adapter.moe_layers()
    assert reader.header["arch"] == "moe" and reader.header["ks"] == [1, 2]
    probes = [r for r in records if r["type"] == "probe"]
    assert probes and {r["layer"] for r in probes} <= {layer.index for layer in layers}
    # the h the probe fits on is the experts' own h (bf16 kernels) and capturing it leaves the logits unchanged
    inputs = {}
    hooks = [layer.experts.register_forward_pre_hook(lambda m, a, index=layer.index: inputs.__setitem__(index, a))
             for layer in layers]
    input_ids = torch.randint(2, 62, (1, 9), generator=torch.Generator().manual_seed(5))
    try:
        with torch.no_grad():
            plain = loaded.model(input_ids).logits
            with HiddenCapture(loaded.model, loaded.adapter) as capture:
                captured = loaded.model(input_ids).logits
                taken = capture.take()
    finally:
        for hook in hooks:
            hook.remove()
    assert torch.equal(captured, plain)
    experts = {layer.index: layer.experts for layer in layers}
    for index, ids, hidden in taken:
        x, routed = inputs[index][0], inputs[index][1]
        assert torch.equal(ids, routed)
        for token in range(ids.shape[0]):
            for slot in range(ids.shape[1]):
                expected = expert_hidden(experts[index], int(ids[token, slot]), x[token])
                torch.testing.assert_close(hidden[token, slot].double(), expected, rtol=2e-2, atol=2e-2)


def write_probe_labels(path, directory, layers):
    from moetools.models import model_identity
    from moetools.streams.files import open_stream_writer

    loaded = load_model(directory)
    identity = model_identity(loaded.model, loaded.adapter, path=str(directory))
    with open_stream_writer(str(path), "labels", "jsonl", True, model=identity) as writer:
        for layer in layers:
            for expert in range(4):
                writer.write({"type": "label", "layer": layer, "expert": expert, "status": "ok",
                              "explanation": f"expert {expert}: w{expert} and w{expert + 1}",
                              "details": {"tokens": [{"piece": f"w{expert}"}, {"piece": f"w{expert + 1}"}],
                                          "logit_lens": [f"w{expert + 9}"]}})


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_probe_causal_where_the_routing_rule_supports_it(checkpoint, family, tmp_path):
    from moetools.cli.probe import command

    directory = checkpoint(family)
    loaded = load_model(directory)
    layers = loaded.adapter.moe_layers()
    write_probe_labels(tmp_path / "labels.jsonl", directory, [layer.index for layer in layers])
    out = tmp_path / "causal.jsonl"
    result = CliRunner().invoke(command, ["causal", str(directory), str(tmp_path / "labels.jsonl"), "--backend",
                                          "offline", "-o", str(out)])
    if family not in CAUSAL:
        assert result.exit_code == 2, result.output
        assert "supports routers that softmax over all experts" in result.output and not out.exists()
        return
    assert result.exit_code == 0, result.output
    causal = [r for r in read_input_records(out) if r["type"] == "causal"]
    assert len(causal) == 4 * len(layers)
    # the ranks are those of a DLA recomputed here in float64 from the bf16 weights: full softmax
    # probabilities, every expert's output, the final norm's frozen rms
    tokenizer, model = loaded.tokenizer, loaded.model
    norm, unembed, seen = loaded.adapter.final_norm(), loaded.adapter.unembedding().weight, {}
    logits_of = loaded.adapter.router_logits
    for record in causal:
        layer = next(layer for layer in layers if layer.index == record["layer"])
        targets = [t["token_id"] for t in record["targets"]]
        seen.clear()
        hooks = [layer.experts.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0])),
                 layer.router.register_forward_hook(lambda m, a, o: seen.__setitem__("logits", logits_of(o))),
                 norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("h", a[0]))]
        scores = torch.zeros(layer.num_experts, dtype=torch.float64)
        try:
            for text in record["triggers"]:
                with torch.no_grad():
                    model(torch.tensor([tokenizer(text)["input_ids"]]))
                x, h = seen["x"].reshape(-1, seen["x"].shape[-1]), seen["h"][0].double()
                probs = torch.softmax(seen["logits"].double(), dim=-1)
                rms = (h.pow(2).mean(-1) + norm.variance_epsilon).sqrt()
                direction = unembed[targets].double().sum(0) * norm.weight.double()
                with torch.no_grad():
                    for expert in range(layer.num_experts):
                        out_e = torch.stack([expert_output(layer.experts, expert, row) for row in x])
                        scores[expert] += (probs[:, expert] * (out_e @ direction) / rms).sum()
        finally:
            for hook in hooks:
                hook.remove()
        # moe-probe runs the experts with bf16 kernels: its DLA is this one to bf16 rounding
        scale = float(scores.abs().max())
        for entry in [{"expert": record["expert"], "dla": record["dla"]}, *record["top_experts"]]:
            assert math.isclose(entry["dla"], float(scores[entry["expert"]]), rel_tol=3e-2, abs_tol=1e-2 * scale), \
                (family, entry, float(scores[entry["expert"]]))
        mine, slack = float(scores[record["expert"]]), 3e-2 * abs(float(scores[record["expert"]])) + 1e-2 * scale
        surely_above = int((scores > mine + slack).sum())  # a near-tie may reorder under bf16, nothing else
        maybe_above = int((scores > mine - slack).sum()) - 1
        assert surely_above + 1 <= record["rank"] <= maybe_above + 1, (family, record["rank"], surely_above)


def read_input_records(path):
    from moetools.streams.files import read_input

    return list(read_input(str(path), kinds="probe", validate=True))
