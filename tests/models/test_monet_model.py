"""MONET model: efficient VD/HD forwards against a naive composition of every expert, parameter
scaling (Appendix A.2), BatchNorm routing, save/load through the Auto classes, published names,
and the routing API for moe-trace."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file

import moetools.models.monet  # noqa: F401  (registers MONET with the Auto classes)
from moetools.models.monet.configuration_monet import MonetConfig
from moetools.models.monet.modeling_monet import (
    MonetForCausalLM,
    MonetHorizontalExperts,
    MonetRouter,
    MonetVerticalExperts,
    routing_aux_losses,
    routing_threshold,
)
from moetools.models.monet.routing import (
    composed_gate_sums,
    composed_gates,
    expert_output_norms,
    expert_outputs,
    run_with_routing,
    top_composed_experts,
)


def tiny_config(**overrides):
    values = {"vocab_size": 61, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 4,
                  "moe_dim": 4, "moe_heads": 2, "moe_experts": 4, "moe_topk": 2, "moe_groups": 2,
                  "max_position_embeddings": 64}
    values.update(overrides)
    return MonetConfig(**values)


def relu2(x):
    return torch.relu(x) ** 2


def randomize(module, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.5)


def random_gates(shape, generator):
    """Sparse routing probabilities like the router's: softmax over a random subset, zero elsewhere."""
    logits = torch.randn(shape, generator=generator, dtype=torch.float64)
    keep = torch.rand(shape, generator=generator) < 0.5
    keep[..., 0] = True
    return torch.softmax(logits.masked_fill(~keep, float("-inf")), dim=-1)


def naive_horizontal_expert(moe, i, j, x):
    """E_ij(x) = V_j relu2(U_i x + b1_i) + b2_j (eq. 6), from the weight matrices."""
    experts, m = moe.experts, moe.moe_dim
    U = moe.u.weight.view(experts, m, -1)[i]          # (m, d)
    b1 = moe.u.bias.view(experts, m)[i]
    V = moe.v.weight.view(-1, experts, m)[:, j]       # (d, m)
    return V @ relu2(U @ x + b1) + moe.b[j]


def naive_vertical_expert(moe, i, j, x):
    """E_ij(x) of eq. 13, assembled as the block matrices of the paper."""
    experts, m = moe.experts, moe.half_dim
    U1, U2 = moe.u1.weight.view(experts, m, -1)[i], moe.u2.weight.view(experts, m, -1)[j]
    b11, b21 = moe.u1.bias.view(experts, m)[i], moe.u2.bias.view(experts, m)[j]

    def block(linear, k):
        return linear.weight.view(-1, experts, m)[:, k]

    V = torch.cat((torch.cat((block(moe.v11, i), block(moe.v12, i)), 1),
                   torch.cat((block(moe.v21, j), block(moe.v22, j)), 1)), 0)   # (d, m)
    U = torch.cat((U1, U2), 0)                                                 # (m, d)
    hidden_bias = torch.cat((b11, b21))
    out_bias = torch.cat((moe.b1[i], moe.b2[j]))
    return V @ relu2(U @ x + hidden_bias) + out_bias


@pytest.mark.parametrize("decompose,experts_class,naive", [
    ("vertical", MonetVerticalExperts, naive_vertical_expert),
    ("horizontal", MonetHorizontalExperts, naive_horizontal_expert),
])
def test_efficient_forward_equals_naive_composition(decompose, experts_class, naive):
    config = tiny_config(hidden_size=8, moe_decompose=decompose, moe_experts=4, moe_dim=4, moe_heads=3)
    moe = experts_class(config).double()
    randomize(moe)  # non-zero biases everywhere
    generator = torch.Generator().manual_seed(1)
    batch, length, heads, experts = 2, 3, 3, 4
    x = torch.randn(batch, length, 8, generator=generator, dtype=torch.float64)
    g1 = random_gates((batch, length, heads, experts), generator)
    g2 = random_gates((batch, length, heads, experts), generator)
    efficient = moe(x, g1, g2)
    reference = torch.zeros_like(efficient)
    for b in range(batch):
        for t in range(length):
            for h in range(heads):
                for i in range(experts):
                    for j in range(experts):
                        reference[b, t] += g1[b, t, h, i] * g2[b, t, h, j] * naive(moe, i, j, x[b, t])
    torch.testing.assert_close(efficient, reference, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("decompose", ["vertical", "horizontal"])
def test_expert_layer_parameters_grow_with_sqrt_n(decompose):
    d, m = 256, 16
    counts = {}
    for experts in (16, 64, 256, 512):
        config = tiny_config(hidden_size=d, num_attention_heads=4, moe_dim=m, moe_experts=experts,
                             moe_topk=4, moe_decompose=decompose)
        with torch.device("meta"):
            layer = (MonetVerticalExperts if decompose == "vertical" else MonetHorizontalExperts)(config)
        counts[experts] = sum(p.numel() for p in layer.parameters())
        # Appendix A.2: 2 sqrt(N) m d + sqrt(N) m + sqrt(N) d (eq. 30-31 for VD, the HD line for HD)
        assert counts[experts] == 2 * experts * m * d + experts * m + experts * d
    # linear in sqrt(N) = moe_experts: quadrupling sqrt(N) quadruples the count
    assert counts[64] == 4 * counts[16] and counts[256] == 4 * counts[64] and counts[512] == 2 * counts[256]


def test_router_keeps_about_topk_experts_and_at_least_one():
    torch.manual_seed(0)
    config = tiny_config(hidden_size=64, moe_heads=4, moe_experts=64, moe_topk=8)
    router = MonetRouter(config)
    assert math.isclose(routing_threshold(8, 64), 1.1503493803760079, rel_tol=1e-9)
    router.train()
    for _ in range(30):  # let the BatchNorm running statistics settle
        router(torch.randn(8, 32, 64))
    router.eval()
    g1, g2 = router(torch.randn(16, 32, 64))
    for g in (g1, g2):
        kept = (g > 0).sum(-1).float()                    # (B, T, H)
        assert kept.min() >= 1
        assert abs(kept.mean().item() - 8) < 2.0, kept.mean()
        torch.testing.assert_close(g.sum(-1), torch.ones_like(kept))
    # a head whose every logit is below sigma still keeps its best expert (threshold clamped to the max)
    with torch.no_grad():
        router.w1.weight.zero_()
    g1, _ = router(torch.randn(2, 3, 64))
    assert ((g1 > 0).sum(-1) >= 1).all()


@pytest.mark.parametrize("decompose", ["vertical", "horizontal"])
def test_save_and_auto_load_give_identical_logits(tmp_path, decompose):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = MonetForCausalLM(tiny_config(moe_decompose=decompose)).eval()
    ids = torch.randint(0, 61, (2, 7))
    model.train()
    model(ids)  # move the BatchNorm running statistics away from their initial values
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "monet"
    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "MonetConfig"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "MonetForCausalLM"
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def published_state_dict(config):
    """Names and shapes of the published release (papers/README.md + LLaMA's attention/norms)."""
    d, e, m, h = config.hidden_size, config.moe_experts, config.moe_dim, config.moe_heads
    tensors = {"model.embed_tokens.weight": (config.vocab_size, d), "model.norm.weight": (d,),
               "lm_head.weight": (config.vocab_size, d)}
    for layer in range(config.num_hidden_layers):
        p = f"model.layers.{layer}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[p + f"self_attn.{name}.weight"] = (d, d)
        tensors[p + "input_layernorm.weight"] = (d,)
        tensors[p + "post_attention_layernorm.weight"] = (d,)
        if layer % config.moe_groups == 0:
            tensors[p + "router.w1.weight"] = (h * e, d)
            tensors[p + "router.w2.weight"] = (h * e, d)
            for norm in ("norm1", "norm2"):
                tensors[p + f"router.{norm}.running_mean"] = (h,)
                tensors[p + f"router.{norm}.running_var"] = (h,)
                tensors[p + f"router.{norm}.num_batches_tracked"] = ()
        if config.moe_decompose == "vertical":
            for name in ("u1", "u2"):
                tensors[p + f"moe.{name}.weight"] = (e * m // 2, d)
                tensors[p + f"moe.{name}.bias"] = (e * m // 2,)
            for name in ("v11", "v12", "v21", "v22"):
                tensors[p + f"moe.{name}.weight"] = (d // 2, e * m // 2)
            tensors[p + "moe.b1"] = (e, d // 2)
            tensors[p + "moe.b2"] = (e, d // 2)
        else:
            tensors[p + "moe.u.weight"] = (e * m, d)
            tensors[p + "moe.u.bias"] = (e * m,)
            tensors[p + "moe.v.weight"] = (d, e * m)
            tensors[p + "moe.b"] = (e, d)
    return {name: (torch.zeros(shape, dtype=torch.long) if name.endswith("num_batches_tracked")
                   else torch.randn(shape) * 0.02 + (1.0 if name.endswith("running_var") else 0.0))
            for name, shape in tensors.items()}


@pytest.mark.parametrize("decompose", ["vertical", "horizontal"])
def test_checkpoint_with_published_names_loads_without_missing_or_unexpected_keys(tmp_path, decompose):
    from transformers import AutoModelForCausalLM

    config = tiny_config(moe_decompose=decompose)
    state = published_state_dict(config)
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    # a config.json in the release's (transformers 4) layout: rope_theta, rope_scaling, intermediate_size null
    release_config = {"architectures": ["MonetForCausalLM"], "model_type": "monet", "vocab_size": 61,
                      "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 4,
                      "num_key_value_heads": 4, "intermediate_size": None, "hidden_act": "relu2",
                      "rope_theta": 10000.0, "rope_scaling": None, "rms_norm_eps": 1e-6,
                      "max_position_embeddings": 64, "moe_dim": 4, "moe_heads": 2, "moe_experts": 4,
                      "moe_topk": 2, "moe_groups": 2, "moe_decompose": decompose, "mlp_bias": None,
                      "pretraining_tp": 1, "tie_word_embeddings": False, "torch_dtype": "float32"}
    (tmp_path / "config.json").write_text(json.dumps(release_config))
    model, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] in (set(), []) and info["unexpected_keys"] in (set(), [])
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        torch.testing.assert_close(loaded[name], tensor)


def test_routing_api_top_experts_gates_and_outputs():
    torch.manual_seed(0)
    config = tiny_config(moe_experts=6, moe_topk=3, moe_heads=3, moe_groups=2)
    model = MonetForCausalLM(config).double()
    randomize(model)
    model.eval()
    ids = torch.randint(0, 61, (2, 5))
    _outputs, layers = run_with_routing(model, ids)
    assert [r.layer for r in layers] == [0, 1, 2]
    assert layers[1].g1 is layers[0].g1 or torch.equal(layers[1].g1, layers[0].g1)  # grouped routing reused
    experts = config.moe_experts
    for routing in layers:
        g1, g2 = routing.g1.double(), routing.g2.double()
        dense = torch.einsum("bthi,bthj->btij", g1, g2).flatten(-2)    # brute force (test only)
        top_ids, top_gates = top_composed_experts(g1, g2, top=5)
        expected_gates, _ = dense.topk(5, dim=-1)
        torch.testing.assert_close(top_gates.double(), expected_gates)
        torch.testing.assert_close(dense.gather(-1, top_ids), expected_gates)
        torch.testing.assert_close(composed_gates(g1, g2, top_ids).double(), expected_gates)
        torch.testing.assert_close(composed_gate_sums(g1, g2).flatten(-2).double(), dense.sum(1))
        # the layer output is sum over composed experts of g_ij E_ij(x): rebuild it from expert_outputs
        x = routing.moe_input.flatten(0, 1)                              # (B*T, D)
        tokens = torch.arange(x.shape[0]).repeat_interleave(experts * experts)
        all_ids = torch.arange(experts * experts).repeat(x.shape[0])
        outs = expert_outputs(model, routing.layer, x, tokens, all_ids, chunk_size=7)
        rebuilt = (dense.flatten(0, 1).flatten()[:, None] * outs).view(x.shape[0], -1, x.shape[1]).sum(1)
        moe = model.model.layers[routing.layer].moe
        torch.testing.assert_close(rebuilt, moe(x[None], g1.flatten(0, 1)[None], g2.flatten(0, 1)[None])[0])
        norms = expert_output_norms(model, routing.layer, x, tokens, all_ids)
        torch.testing.assert_close(norms, outs.norm(dim=-1).float())


def test_config_refuses_impossible_settings():
    with pytest.raises(Exception, match="moe_topk"):
        tiny_config(moe_topk=9, moe_experts=4)
    with pytest.raises(Exception, match="even hidden size"):
        tiny_config(hidden_size=9, num_attention_heads=3, moe_decompose="vertical", moe_experts=4)


def test_uniformity_and_ambiguity_losses_follow_eq_16_17_and_enter_the_loss_with_lambda():
    """Eq. 16-17 written out with loops, against routing_aux_losses; eq. 18 with lambda = 1e-3 in training only."""
    generator = torch.Generator().manual_seed(3)
    batch, length, heads, experts = 2, 5, 3, 4
    g1 = random_gates((batch, length, heads, experts), generator)
    g2 = random_gates((batch, length, heads, experts), generator)
    uniformity, ambiguity = routing_aux_losses(g1, g2)
    expected_uniformity = expected_ambiguity = 0.0
    for g in (g1, g2):
        for h in range(heads):
            for i in range(experts):  # g-hat: the routing probability averaged over the batch's tokens
                expected_uniformity -= math.log(g[:, :, h, i].mean().item()) / (2 * heads * experts)
            expected_ambiguity += sum(1 - g[b, t, h].max().item() for b in range(batch) for t in range(length)) \
                / (batch * length) / (2 * heads)
    assert uniformity.item() == pytest.approx(expected_uniformity, rel=1e-6)
    assert ambiguity.item() == pytest.approx(expected_ambiguity, rel=1e-6)
    # the extremes: uniform routing is the minimum of L_unif (log E); one-hot routing has no ambiguity
    flat = torch.full((batch, length, heads, experts), 1 / experts)
    assert routing_aux_losses(flat, flat)[0].item() == pytest.approx(math.log(experts))
    one_hot = torch.nn.functional.one_hot(torch.arange(batch * length * heads) % experts, experts).float()
    one_hot = one_hot.view(batch, length, heads, experts)
    assert routing_aux_losses(one_hot, one_hot)[1].item() == 0.0

    torch.manual_seed(0)
    config = tiny_config()
    assert config.router_aux_loss_coef == 1e-3  # paper B.1 / C.1
    model = MonetForCausalLM(config)
    ids = torch.randint(0, 61, (2, 7))
    model.train()
    out = model(ids, labels=ids, output_router_probs=True)
    routed = [sum(routing_aux_losses(*probs)) for probs in out.router_probs]  # one per routing group
    assert len(routed) == 2  # 3 layers, moe_groups=2: routing computed at layers 0 and 2
    torch.testing.assert_close(out.aux_loss, sum(routed) / len(routed))
    torch.testing.assert_close(out.loss, out.lm_loss + 1e-3 * out.aux_loss)
    model.eval()
    evaluated = model(ids, labels=ids)
    assert evaluated.aux_loss is None and torch.equal(evaluated.loss, evaluated.lm_loss)
