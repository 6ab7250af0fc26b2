"""Adapters and routing capture on tiny random models of every supported transformers family."""

from __future__ import annotations

import pytest
import torch
import transformers

from moetools.errors import ModelError
from moetools.models import Adapter, adapter_for, model_identity, register_adapter
from moetools.models.capture import RoutingCapture
from moetools.models.registry import unregister_adapter

COMMON = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128}
MLA = {"kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 8, "num_key_value_heads": 4}


def tiny_config(family: str):
    common = dict(COMMON)
    if family == "olmoe":
        return transformers.OlmoeConfig(num_experts=8, num_experts_per_tok=2, **common)
    if family == "mixtral":
        return transformers.MixtralConfig(num_local_experts=8, num_experts_per_tok=2, **common)
    if family == "qwen2_moe":
        return transformers.Qwen2MoeConfig(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=24,
                                           shared_expert_intermediate_size=40, norm_topk_prob=True, **common)
    if family == "qwen3_moe":
        return transformers.Qwen3MoeConfig(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=24, head_dim=8,
                                           **common)
    common.update(MLA)
    if family == "deepseek_v2":
        return transformers.DeepseekV2Config(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=24,
                                             n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=None, n_group=2,
                                             topk_group=1, topk_method="group_limited_greedy", **common)
    if family == "deepseek_v3":
        return transformers.DeepseekV3Config(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=24,
                                             n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=16, n_group=2,
                                             topk_group=1, **common)
    common = dict(COMMON)
    if family == "ernie4_5_moe":
        return transformers.Ernie4_5_MoeConfig(moe_num_experts=8, moe_k=2, moe_intermediate_size=24,
                                               moe_num_shared_experts=1, moe_layer_start_index=1, **common)
    if family == "gpt_oss":
        return transformers.GptOssConfig(num_local_experts=8, num_experts_per_tok=2, head_dim=8, **common)
    raise KeyError(family)


FAMILIES = ["olmoe", "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "ernie4_5_moe", "gpt_oss"]


def tiny_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(family)).eval()
    with torch.no_grad():  # random router/score biases so the bias paths matter
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if "e_score_correction_bias" in name or name.endswith("router.bias") or "moe_statics" in name:
                tensor.copy_(torch.randn_like(tensor) * 0.1)
    return model


def expert_output(experts, expert: int, x: torch.Tensor) -> torch.Tensor:
    """E_i(x) recomputed from the fused weights, fp32 (independent of transformers' kernels)."""
    x = x.double()
    if getattr(experts, "is_transposed", False):  # GPT-OSS: [E, d, 2I] interleaved gate/up, biases, clamped swiglu
        gate_up = x @ experts.gate_up_proj[expert].double() + experts.gate_up_proj_bias[expert].double()
        gate, up = gate_up[..., ::2], gate_up[..., 1::2]
        gate = gate.clamp(max=experts.limit)
        up = up.clamp(min=-experts.limit, max=experts.limit)
        hidden = (up + 1) * (gate * torch.sigmoid(gate * experts.alpha))
        return hidden @ experts.down_proj[expert].double() + experts.down_proj_bias[expert].double()
    gate, up = (x @ experts.gate_up_proj[expert].double().T).chunk(2, dim=-1)  # [E, 2I, d]
    hidden = experts.act_fn(gate) * up
    return hidden @ experts.down_proj[expert].double().T  # [E, d, I]


def independent_probabilities(family: str, logits: torch.Tensor) -> torch.Tensor:
    if family == "deepseek_v3":
        scores = logits.double().sigmoid()
        return scores / scores.sum(-1, keepdim=True)
    return torch.softmax(logits.double(), dim=-1)


@pytest.fixture(scope="module", params=FAMILIES)
def traced(request):
    family = request.param
    model = tiny_model(family)
    adapter = adapter_for(model)
    input_ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    router_inputs, experts_inputs = [], []
    hooks = []
    for layer in adapter.moe_layers():
        hooks.append(layer.router.register_forward_hook(lambda m, a, o, store=router_inputs: store.append(a[0])))
        hooks.append(layer.experts.register_forward_pre_hook(lambda m, a, store=experts_inputs: store.append(a[0])))
    with torch.no_grad():
        untraced = model(input_ids).logits
        router_inputs.clear(), experts_inputs.clear()
        with RoutingCapture(model, adapter) as capture:
            logits = model(input_ids).logits
            layers = capture.take(torch.ones_like(input_ids), keep_probs=True)  # probs and per-sequence prob_sum
        after = model(input_ids).logits
    for hook in hooks:
        hook.remove()
    return {"family": family, "model": model, "adapter": adapter, "untraced": untraced, "logits": logits,
            "after": after, "layers": layers, "router_inputs": router_inputs, "experts_inputs": experts_inputs}


def test_adapter_finds_moe_and_dense_layers(traced):
    adapter, config = traced["adapter"], traced["model"].config
    layers = adapter.moe_layers()
    expected_dense = [0] if traced["family"] in ("deepseek_v2", "deepseek_v3", "ernie4_5_moe") else []
    assert adapter.dense_layers() == expected_dense
    assert [layer.index for layer in layers] == [i for i in range(config.num_hidden_layers) if i not in expected_dense]
    assert all(layer.num_experts == 8 and layer.top_k == 2 for layer in layers)
    has_shared = traced["family"] in ("qwen2_moe", "deepseek_v2", "deepseek_v3", "ernie4_5_moe")
    assert all((layer.shared is not None) == has_shared for layer in layers)
    assert adapter.final_norm() is traced["model"].model.norm
    assert adapter.unembedding() is traced["model"].lm_head


def test_tracing_does_not_change_logits(traced):
    assert torch.equal(traced["logits"], traced["untraced"])
    assert torch.equal(traced["after"], traced["untraced"])  # and the model is restored afterwards


def test_ids_and_gates_equal_the_models_router(traced):
    with torch.no_grad():
        for layer, recorded, hidden in zip(traced["adapter"].moe_layers(), traced["layers"], traced["router_inputs"]):
            _, gates, ids = layer.router(hidden)
            assert torch.equal(recorded["ids"], ids)
            assert torch.equal(recorded["gates"], gates)


def test_contribution_equals_recomputation_from_expert_weights(traced):
    for layer, recorded, hidden in zip(traced["adapter"].moe_layers(), traced["layers"], traced["experts_inputs"]):
        ids, gates = recorded["ids"], recorded["gates"].double()
        expected = torch.zeros_like(gates)
        with torch.no_grad():
            for token in range(ids.shape[0]):
                for slot in range(ids.shape[1]):
                    out = expert_output(layer.experts, int(ids[token, slot]), hidden[token])
                    expected[token, slot] = gates[token, slot] * out.norm()
        assert torch.allclose(recorded["contribution"].double(), expected, rtol=1e-5, atol=1e-7)


def test_full_distribution_equals_router_probabilities(traced):
    with torch.no_grad():
        for layer, recorded, hidden in zip(traced["adapter"].moe_layers(), traced["layers"], traced["router_inputs"]):
            logits, _, _ = layer.router(hidden)
            expected = independent_probabilities(traced["family"], logits)
            assert recorded["probs"].shape == (18, 8)
            assert torch.allclose(recorded["probs"].double().sum(0), expected.sum(0), atol=1e-5)
            assert torch.allclose(recorded["probs"].double().sum(-1), torch.ones(18, dtype=torch.float64), atol=1e-5)
            # what the trace stores: the per-sequence sum of the full distribution (2 sequences of 9 tokens)
            assert recorded["prob_sum"].shape == (2, 8)
            assert torch.allclose(recorded["prob_sum"].double(), expected.view(2, 9, 8).sum(1), atol=1e-5)


def test_logit_lens_is_top_tokens_of_each_expert_output():
    model = tiny_model("olmoe")
    adapter = adapter_for(model)
    inputs = []
    layer = adapter.moe_layers()[0]
    hook = layer.experts.register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
    with torch.no_grad(), RoutingCapture(model, adapter, logit_lens=3) as capture:
        model(torch.arange(2, 9)[None])
        recorded = capture.take()[0]
        hook.remove()
        out = expert_output(layer.experts, int(recorded["ids"][4, 1]), inputs[0][4]).float()
        expected = model.lm_head(model.model.norm(out)).topk(3).indices
    assert recorded["lens"].shape == (7, 2, 3)
    assert torch.equal(recorded["lens"][4, 1], expected)


def test_eager_model_is_traced_with_grouped_mm_and_restored():
    model = tiny_model("mixtral")
    model.set_experts_implementation("eager")
    with torch.no_grad(), RoutingCapture(model, adapter_for(model)) as capture:
        model(torch.arange(2, 9)[None])
        assert len(capture.take()) == 2
    assert model.config._experts_implementation == "eager"


def test_unknown_model_names_what_was_found():
    config = transformers.LlamaConfig(**{k: v for k, v in COMMON.items()})
    model = transformers.AutoModelForCausalLM.from_config(config)
    with pytest.raises(ModelError, match=r"LlamaForCausalLM.*'llama'.*olmoe"):
        adapter_for(model)


def test_user_adapter_registers_like_a_builtin():
    @register_adapter
    class MyOlmoe(Adapter):
        name = "my-olmoe"
        model_types = ("olmoe",)

    try:
        adapter = adapter_for(tiny_model("olmoe"))
        assert adapter.name == "my-olmoe" and len(adapter.moe_layers()) == 2
    finally:
        unregister_adapter(MyOlmoe)
    assert adapter_for(tiny_model("olmoe")).name == "olmoe"


def test_identity_fingerprint_covers_config_and_tokenizer(tmp_path):
    model = tiny_model("qwen3_moe")
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    for name in ("a", "b"):
        model.config.save_pretrained(tmp_path / name)
        (tmp_path / name / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0}}}')
    first = model_identity(model, path=tmp_path / "a")
    assert first["fingerprint"] == model_identity(model, path=tmp_path / "b")["fingerprint"]
    assert first["fingerprint"].startswith("v2:sha256:") and len(first["fingerprint"]) == 10 + 64
    assert {k: first[k] for k in ("model_type", "num_layers", "moe_layers", "num_experts", "top_k")} == {
        "model_type": "qwen3_moe", "num_layers": 2, "moe_layers": [0, 1], "num_experts": 8, "top_k": 2}
    (tmp_path / "b" / "tokenizer.json").write_text('{"model": {"vocab": {"b": 0}}}')  # the content counts
    assert first["fingerprint"] != model_identity(model, path=tmp_path / "b")["fingerprint"]


def test_prob_sum_counts_only_real_tokens_of_each_sequence():
    model = tiny_model("qwen2_moe")
    adapter = adapter_for(model)
    input_ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    with torch.no_grad(), RoutingCapture(model, adapter) as capture:
        model(input_ids, attention_mask=mask)
        layers = capture.take(mask, keep_probs=True)
    for layer in layers:
        probs = layer["probs"].view(2, 6, 8).double()
        assert torch.allclose(layer["prob_sum"][0].double(), probs[0].sum(0), atol=1e-5)
        assert torch.allclose(layer["prob_sum"][1].double(), probs[1, :3].sum(0), atol=1e-5)


def _monet(decompose: str):
    import moetools.models.monet  # noqa: F401  (registers MONET with the Auto classes)
    from moetools.models.monet.configuration_monet import MonetConfig

    config = MonetConfig(vocab_size=61, hidden_size=16, num_hidden_layers=3, num_attention_heads=4, moe_dim=4,
                         moe_heads=2, moe_experts=4, moe_topk=2, moe_groups=2, max_position_embeddings=64,
                         moe_decompose=decompose)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model


def _naive_monet_expert(moe, i: int, j: int, x: torch.Tensor) -> torch.Tensor:
    """E_ij(x) from the weight matrices: HD eq. 6, VD eq. 13 (squared ReLU)."""
    relu2 = lambda t: torch.relu(t) ** 2
    experts = moe.experts
    x = x.double()
    if hasattr(moe, "u"):
        m = moe.moe_dim
        hidden = relu2(moe.u.weight.double().view(experts, m, -1)[i] @ x + moe.u.bias.double().view(experts, m)[i])
        return moe.v.weight.double().view(-1, experts, m)[:, j] @ hidden + moe.b.double()[j]
    m = moe.half_dim
    a1 = relu2(moe.u1.weight.double().view(experts, m, -1)[i] @ x + moe.u1.bias.double().view(experts, m)[i])
    a2 = relu2(moe.u2.weight.double().view(experts, m, -1)[j] @ x + moe.u2.bias.double().view(experts, m)[j])

    def block(linear, index, activation):
        return linear.weight.double().view(-1, experts, m)[:, index] @ activation

    top = block(moe.v11, i, a1) + block(moe.v12, i, a2) + moe.b1.double()[i]
    bottom = block(moe.v21, j, a1) + block(moe.v22, j, a2) + moe.b2.double()[j]
    return torch.cat((top, bottom))


@pytest.mark.parametrize("decompose", ["vertical", "horizontal"])
def test_monet_adapter_composed_experts(decompose):
    model = _monet(decompose)
    adapter = adapter_for(model)
    assert adapter.name == "monet" and [layer.num_experts for layer in adapter.moe_layers()] == [16, 16, 16]
    input_ids = torch.randint(0, 61, (2, 5), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(input_ids)
    seen = []
    hooks = [layer.experts.register_forward_pre_hook(lambda m, a: seen.append(a)) for layer in adapter.moe_layers()]
    with torch.no_grad():
        untraced = model(input_ids).logits
        seen.clear()
        with adapter.capture() as capture:
            traced = model(input_ids, attention_mask=mask).logits
            layers = capture.take(mask)
    for hook in hooks:
        hook.remove()
    assert torch.equal(traced, untraced)
    for layer, recorded, (x, g1, g2) in zip(adapter.moe_layers(), layers, seen):
        g1, g2 = g1.double().flatten(0, 1), g2.double().flatten(0, 1)  # (N, H, E)
        every = torch.einsum("nhi,nhj->nij", g1, g2).reshape(-1, 16)  # g_ij of all 16 pairs
        ids, gates = recorded["ids"].long(), recorded["gates"].double()
        assert ids.shape == (10, 2)
        for n in range(10):
            best = every[n].sort(descending=True).values[:2]
            assert torch.allclose(gates[n], best, atol=1e-6)
            for slot in range(2):
                if gates[n, slot] > 0:
                    expert = int(ids[n, slot])
                    assert torch.isclose(gates[n, slot], every[n, expert], atol=1e-6)
                    out = _naive_monet_expert(layer.experts, expert // 4, expert % 4, x.flatten(0, 1)[n])
                    assert torch.isclose(recorded["contribution"][n, slot].double(), gates[n, slot] * out.norm(),
                                         rtol=1e-5)
        assert torch.allclose(recorded["prob_sum"].double(), every.view(2, 5, 16).sum(1), atol=1e-5)
