"""moe-mask on tiny random models of every family and MONET: a masked directory loaded fresh (in a
process that never imports moetools) gives the logits of the original model under an independent
reference mask written here (a router forward hook setting the masked logits to −∞), for equal and
unequal per-layer sets; a trace of it never selects a masked expert; bad expert files exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from safetensors.torch import load_file

from moetools.mask import mask_directory, masked
from moetools.mask.directory import _meta_model
from moetools.models import adapter_for, load_model, model_identity
from moetools.models.shared_routers import expand_to_groups, router_groups
from tests.models import test_adapters
from tests.models.test_adapters import FAMILIES, tiny_model
from tests.tiny_models import save_word_tokenizer

INF = float("-inf")
# per-family masks: equal-size sets (pruned) and unequal ones (bias / remote), on a 3-layer tiny model
EQUAL = {"deepseek_v2": [1, 5], "deepseek_v3": [1, 5], "ernie4_5_moe": [1, 5]}  # one per group of 4
UNEQUAL = [[0, 3, 6], [2], [4, 7]]  # assigned to the model's MoE layers in order


def three_layer_model(family: str, seed: int = 0):
    saved = dict(test_adapters.COMMON)
    test_adapters.COMMON["num_hidden_layers"] = 3
    try:
        return tiny_model(family, seed)
    finally:
        test_adapters.COMMON.clear(), test_adapters.COMMON.update(saved)


def monet_model():
    return test_adapters._monet("vertical")


def mask_sets(model, kind: str) -> dict[int, list[int]]:
    layers = [layer.index for layer in adapter_for(model).moe_layers()]
    if model.config.model_type == "monet":  # 16 composed experts (i, j) = 4i + j per layer
        return ({layer: [1, 6, 11] for layer in layers} if kind == "equal"
                else dict(zip(layers, [[0, 5, 10, 15, 3], [2], [7, 8]])))
    if kind == "equal":
        return {layer: EQUAL.get(model.config.model_type, [2, 7]) for layer in layers}
    return dict(zip(layers, UNEQUAL))


# -- the independent reference: masked logits at −∞ in the family's router -------------------------

def reference_route(family, router, logits, masked_ids):
    """The family's router (transformers 5) recomputed in float64 with the masked logits at −∞."""
    raw = logits.double()
    lm = raw.clone()
    lm[:, masked_ids] = INF
    k, n = router.top_k, raw.shape[-1]
    if family == "gpt_oss":
        top = lm.topk(k, dim=-1)
        return logits, torch.softmax(top.values, -1).to(logits.dtype), top.indices
    if family == "deepseek_v3":  # sigmoid scores: masked ones out of groups, choice and normalisation
        scores = raw.sigmoid()
        choice = scores + router.e_score_correction_bias.double()
        choice[:, masked_ids] = INF
        per = n // router.num_group
        group = choice.view(-1, router.num_group, per).topk(2, dim=-1).values.sum(-1)
        allowed = torch.zeros_like(group).scatter(1, group.topk(router.topk_group, dim=-1).indices, 1)
        choice[~allowed.repeat_interleave(per, dim=1).bool()] = INF
        ids = choice.topk(k, dim=-1).indices
        w = scores.gather(1, ids)
        w = w / w.sum(-1, keepdim=True) if router.norm_topk_prob else w
        return logits, (w * router.routed_scaling_factor).float(), ids
    probs = torch.softmax(lm, dim=-1)  # the masked experts leave the denominator
    if family == "ernie4_5_moe":
        choice = probs + router.moe_statics.e_score_correction_bias.double()[0]
        choice[:, masked_ids] = INF
        ids = choice.topk(k, dim=-1).indices
        w = probs.gather(1, ids)
        return logits, (w / w.sum(-1, keepdim=True).clamp(min=router.norm_min)).float(), ids
    if family == "deepseek_v2":
        if router.topk_method == "group_limited_greedy":
            per = n // router.num_group
            group = probs.view(-1, router.num_group, per).max(-1).values
            allowed = torch.zeros_like(group).scatter(1, group.topk(router.topk_group, dim=-1).indices, 1)
            probs = probs.masked_fill(~allowed.repeat_interleave(per, dim=1).bool(), 0.0)
        w, ids = probs.topk(k, dim=-1)
        return logits, (w * router.routed_scaling_factor).float(), ids
    w, ids = probs.topk(k, dim=-1)
    if family == "mixtral" or router.norm_topk_prob:
        w = w / w.sum(-1, keepdim=True)
    return logits, w.float(), ids


def _naive_monet_layer(moe, x, g1, g2, masked_ids):
    """Σ over unmasked composed experts of g_ij E_ij(x), expert by expert (paper 004 eq. 7/14)."""
    e = moe.experts
    out = torch.zeros(*x.shape[:-1], x.shape[-1], dtype=torch.float64)
    flat = x.flatten(0, 1)
    gates = torch.einsum("bthi,bthj->btij", g1.double(), g2.double()).flatten(0, 1)  # (N, E, E)
    for pair in range(e * e):
        if pair in masked_ids:
            continue
        i, j = divmod(pair, e)
        outputs = torch.stack([test_adapters._naive_monet_expert(moe, i, j, flat[t]) for t in range(flat.shape[0])])
        out += (gates[:, i, j, None] * outputs).view_as(out)
    return out.to(x.dtype)


def reference_logits(model, experts: dict, input_ids):
    family = model.config.model_type
    handles = []
    for layer in adapter_for(model).moe_layers():
        ids = experts.get(layer.index, [])
        if family == "monet":
            hook = (lambda m, a, o, ids=ids: _naive_monet_layer(m, *a, set(ids)))
            handles.append(layer.experts.register_forward_hook(hook))
        elif ids:
            hook = (lambda m, a, o, ids=ids: reference_route(family, m, o[0], ids))
            handles.append(layer.router.register_forward_hook(hook))
    try:
        with torch.no_grad():
            return model(input_ids).logits
    finally:
        for handle in handles:
            handle.remove()


# -- fixtures: every family x {equal, unequal} masked to a directory ---------------------------------

CASES = [(family, kind) for family in [*FAMILIES, "monet"] for kind in ("equal", "unequal")]
INPUT = torch.randint(0, 61, (2, 7), generator=torch.Generator().manual_seed(5))

FRESH = textwrap.dedent("""
    import json, sys, torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM
    cases, input_ids, out = json.load(open(sys.argv[1])), torch.tensor(json.loads(sys.argv[2])), sys.argv[3]
    logits, refused = {}, []
    for name, (path, remote) in cases.items():
        if remote:  # without trust_remote_code the directory must refuse to load, not load unmasked
            try:
                AutoModelForCausalLM.from_pretrained(path)
            except Exception:
                refused.append(name)
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=remote, dtype=torch.float32).eval()
        with torch.no_grad():
            logits[name] = model(input_ids).logits.contiguous()
    save_file(logits, out)
    json.dump({"refused": refused, "moetools_imported": any(m.startswith("moetools") for m in sys.modules)},
              open(out + ".json", "w"))
""")


@pytest.fixture(scope="module")
def masked_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mask")
    cases, results = {}, {}
    for family, kind in CASES:
        model = monet_model() if family == "monet" else three_layer_model(family)
        source = root / f"{family}-base"
        if not source.exists():
            model.save_pretrained(source)
            save_word_tokenizer(source, [f"w{i}" for i in range(40)])
        experts = mask_sets(model, kind)
        identity = model_identity(*_meta_model(source), path=source)  # as moe-select would record it
        experts_file = root / f"{family}-{kind}.json"
        experts_file.write_text(json.dumps({"experts": {str(k): v for k, v in experts.items()},
                                            "moetools": {"version": 1, "model": identity}}))
        out = root / f"{family}-{kind}"
        record = mask_directory(source, experts_file, out)
        cases[f"{family}-{kind}"] = (str(out), record["mode"] == "remote")
        # the reference masks what a shared router's choice reaches: MONET's layers 0 and 1 share one
        # router here (moe_groups = 2), so a composed expert masked in either is masked in both
        groups = [g for g in router_groups(model, adapter_for(model)) if len(g) > 1]
        reference = expand_to_groups(experts, groups)[0]
        results[f"{family}-{kind}"] = {"model": model, "experts": experts, "reference": reference,
                                       "record": record, "out": out,
                                       "source": source, "experts_file": experts_file}
    (root / "cases.json").write_text(json.dumps(cases))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(root / "modules"))
    subprocess.run([sys.executable, "-c", FRESH, str(root / "cases.json"), json.dumps(INPUT.tolist()),
                    str(root / "logits.safetensors")], check=True, cwd=root, env=env,
                   stdin=subprocess.DEVNULL)
    fresh = load_file(root / "logits.safetensors")
    info = json.loads((root / "logits.safetensors.json").read_text())
    return results, fresh, info


def test_fresh_process_never_imported_moetools(masked_dirs):
    assert masked_dirs[2]["moetools_imported"] is False


@pytest.mark.parametrize("case", [f"{f}-{k}" for f, k in CASES])
def test_masked_directory_equals_reference_mask(masked_dirs, case):
    results, fresh, info = masked_dirs
    entry = results[case]
    expected = reference_logits(entry["model"], entry["reference"], INPUT)
    unmasked = entry["model"](INPUT).logits.detach()
    assert not torch.allclose(expected, unmasked, atol=1e-4)  # the mask matters on these inputs
    assert torch.allclose(fresh[case], expected, atol=1e-5, rtol=1e-5), (fresh[case] - expected).abs().max()
    if entry["record"]["mode"] == "remote":
        assert case in info["refused"]


def test_modes_are_the_documented_ones(masked_dirs):
    modes = {case: entry["record"]["mode"] for case, entry in masked_dirs[0].items()}
    for family in FAMILIES:
        assert modes[f"{family}-equal"] == "pruned"
        expected = "bias" if family in ("gpt_oss", "deepseek_v3", "ernie4_5_moe") else "remote"
        assert modes[f"{family}-unequal"] == expected, family
    assert modes["monet-equal"] == modes["monet-unequal"] == "remote"


def test_pruned_directory_is_a_standard_smaller_checkpoint(masked_dirs):
    entry = masked_dirs[0]["olmoe-equal"]
    config = json.loads((entry["out"] / "config.json").read_text())
    assert config["model_type"] == "olmoe" and config["num_experts"] == 6 and "auto_map" not in config
    record = config["moe_mask"]
    assert record["layers"]["0"] == {"masked": [2, 7], "kept": [0, 1, 3, 4, 5, 6],
                                     "map": {"0": 0, "1": 1, "3": 2, "4": 3, "5": 4, "6": 5}}
    base = load_model(entry["source"], tokenizer=False).model
    assert record["base"]["fingerprint"] == model_identity(base, path=entry["source"])["fingerprint"]
    assert record["experts"]["file"]["sha256"].startswith("sha256:")
    names = sorted(p.name for p in entry["out"].iterdir())
    assert "model.safetensors" in names and "tokenizer.json" in names and "moe_mask.json" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl", ".pth"))]
    assert not [p for p in entry["out"].parent.iterdir() if ".partial-" in p.name]  # written atomically
    # a masked model never passes for its base: its identity differs
    loaded = transformers.AutoModelForCausalLM.from_pretrained(entry["out"])
    assert model_identity(loaded, path=entry["out"])["fingerprint"] != record["base"]["fingerprint"]


@pytest.mark.parametrize("case", [f"{f}-{k}" for f, k in CASES])
def test_in_memory_context_manager_equals_reference(masked_dirs, case):
    entry = masked_dirs[0][case]
    model = entry["model"]
    expected = reference_logits(model, entry["reference"], INPUT)
    with torch.no_grad():
        before = model(INPUT).logits
        with masked(model, entry["experts"]):
            inside = model(INPUT).logits
        after = model(INPUT).logits
    assert torch.allclose(inside, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(before, after)  # hooks removed


@pytest.mark.parametrize("case", ["olmoe-equal", "mixtral-unequal", "deepseek_v3-unequal", "gpt_oss-equal",
                                  "qwen2_moe-unequal", "ernie4_5_moe-unequal"])
def test_trace_of_masked_directory_never_selects_a_masked_expert(masked_dirs, case):
    entry = masked_dirs[0][case]
    record = entry["record"]
    loaded = load_model(entry["out"], tokenizer=False, trust_remote_code=record["mode"] == "remote")
    ids = torch.randint(0, 61, (3, 11), generator=torch.Generator().manual_seed(9))
    with torch.no_grad(), loaded.adapter.capture() as capture:
        loaded.model(ids, attention_mask=torch.ones_like(ids))
        layers = capture.take(torch.ones_like(ids))
    for layer, recorded in zip(loaded.adapter.moe_layers(), layers):
        back = {v: int(k) for k, v in record["layers"][str(layer.index)]["map"].items()}  # output id -> original
        selected = recorded["ids"].long()[recorded["gates"] > 0].tolist()
        originals = {back[i] for i in selected}
        assert originals and not originals & set(entry["experts"][layer.index])
