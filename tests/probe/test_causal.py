"""moe-probe causal: DLA ranks on a hand-built tiny OLMoE, the formula against a brute-force computation,
the LLM path against the real loopback stub server, a refused answer asked again, bad input -> exit 2."""

import json

import pytest
import torch
import transformers

from moetools.cli.probe import command as moe_probe
from moetools.models import model_identity
from moetools.models.loader import load_model
from moetools.probe.causal_prompts import parse_answer
from moetools.probe.dla import all_expert_outputs, layer_dla
from moetools.streams.files import open_stream_writer, read_input
from tests.llm_stub import LLMStub
from tests.tiny_models import save_tiny_olmoe, save_word_tokenizer

WORDS = [f"w{i}" for i in range(40)]
PLANTED_LAYER, PLANTED_EXPERT, TARGET_WORD = 1, 3, "w7"


def plant(directory):
    """Expert 3 of layer 1 writes along γ ⊙ W_U[w7] with a positive coefficient: it must rank first on w7.

    gate rows = up rows, so h = silu(a)·a = a²σ(a) >= 0; down_proj = u ⊗ 1 with u = 5·γ ⊙ W_U[t]/‖·‖.
    """
    model = transformers.AutoModelForCausalLM.from_pretrained(directory)
    target = WORDS.index(TARGET_WORD) + 2
    with torch.no_grad():
        experts = model.model.layers[PLANTED_LAYER].mlp.experts
        w = experts.gate_up_proj[PLANTED_EXPERT]  # (2I, d)
        half = w.shape[0] // 2
        w[half:] = w[:half]
        u = model.model.norm.weight * model.lm_head.weight[target]
        experts.down_proj[PLANTED_EXPERT] = 5 * (u / u.norm())[:, None] * torch.ones(1, experts.down_proj.shape[-1])
    model.save_pretrained(directory)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("olmoe")
    save_tiny_olmoe(directory, WORDS)
    plant(directory)
    return directory


def write_labels(path, model_dir, details=True, explanation="tokens w1 and w2"):
    loaded = load_model(str(model_dir))
    identity = model_identity(loaded.model, loaded.adapter, path=str(model_dir))
    with open_stream_writer(str(path), "labels", "jsonl", True, model=identity) as writer:
        for layer in (0, 1):
            for expert in range(8):
                record = {"type": "label", "layer": layer, "expert": expert, "status": "ok",
                          "explanation": f"expert {expert}: {explanation}"}
                if details:
                    record["details"] = {"tokens": [{"piece": "w1"}, {"piece": "w2"}], "logit_lens": [TARGET_WORD]}
                writer.write(record)


def records(path):
    return list(read_input(str(path), kinds="probe", validate=True))


def test_planted_expert_ranks_first_and_dla_matches_brute_force(tiny):
    model, tokenizer, adapter = load_model(str(tiny))
    target = tokenizer.convert_tokens_to_ids(TARGET_WORD)
    triggers = ["w1 w2 w3", "w4 w5"]
    scores = layer_dla(model, tokenizer, adapter, triggers, [target])
    assert max(range(8), key=lambda i: scores[PLANTED_LAYER][i]) == PLANTED_EXPERT
    # brute force: explicit per-expert matmuls on the layer input, softmax router, frozen final rms
    layer = model.model.layers[PLANTED_LAYER]
    seen = {}
    hooks = [layer.post_attention_layernorm.register_forward_hook(lambda m, a, o: seen.__setitem__("x", o)),
             model.model.norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("h", a[0]))]
    expected = torch.zeros(8, dtype=torch.float64)
    with torch.no_grad():
        for text in triggers:
            model(**tokenizer(text, return_tensors="pt"))
            x, h = seen["x"][0].double(), seen["h"][0].double()  # (T, d)
            experts = layer.mlp.experts
            probs = torch.softmax(x @ layer.mlp.gate.weight.double().T, dim=-1)  # (T, E)
            rms = (h.pow(2).mean(-1) + model.model.norm.variance_epsilon).sqrt()  # (T,)
            for i in range(8):
                gate, up = (x @ experts.gate_up_proj[i].double().T).chunk(2, dim=-1)
                out = (torch.nn.functional.silu(gate) * up) @ experts.down_proj[i].double().T  # (T, d)
                logit = (out * model.model.norm.weight.double()) @ model.lm_head.weight[target].double()  # (T,)
                expected[i] += (probs[:, i] * logit / rms).sum()
    for hook in hooks:
        hook.remove()
    assert torch.allclose(torch.tensor(scores[PLANTED_LAYER], dtype=torch.float64), expected, rtol=1e-4, atol=1e-6)


def test_all_expert_outputs_equal_per_expert_matmuls(tiny):
    model, _, _ = load_model(str(tiny))
    experts = model.model.layers[0].mlp.experts
    x = torch.randn(5, 32)
    got = all_expert_outputs(experts, x)  # (5, 8, 32)
    for i in range(8):
        gate, up = (x @ experts.gate_up_proj[i].T).chunk(2, dim=-1)
        assert torch.allclose(got[:, i], (torch.nn.functional.silu(gate) * up) @ experts.down_proj[i].T, atol=1e-5)


def test_offline_fallback_end_to_end(tiny, tmp_path, run_tool):
    write_labels(tmp_path / "labels.jsonl", tiny)
    out = tmp_path / "causal.jsonl"
    result = run_tool(moe_probe, ["causal", str(tiny), str(tmp_path / "labels.jsonl"), "--backend", "offline",
                                  "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    found = records(out)
    header = read_input(str(out), kinds="probe").header
    assert header["causal"]["proposer"]["backend"] == "offline"
    causal = [r for r in found if r["type"] == "causal"]
    assert len(causal) == 16 and all(r["proposer"]["method"].startswith("offline") for r in causal)
    planted = next(r for r in causal if (r["layer"], r["expert"]) == (PLANTED_LAYER, PLANTED_EXPERT))
    assert planted["rank"] == 1 and planted["targets"][0]["text"] == TARGET_WORD
    assert planted["triggers"] == ["w1", "w2", "w1 w2"] and planted["messages"] is None
    layers = {r["layer"]: r for r in found if r["type"] == "causal_layer"}
    # every expert of a layer is labelled with the same targets: exactly one is top-1
    assert layers[PLANTED_LAYER]["top1_rate"] == pytest.approx(1 / 8)
    assert layers[PLANTED_LAYER]["chance_top5"] == pytest.approx(5 / 8)
    assert 0 <= layers[0]["baseline_top1_rate"] <= 1


def json_answer(body):
    return json.dumps({"triggers": ["w1 w2 w3", "w4"], "targets": [TARGET_WORD, "zzz-unknown"]})


def test_llm_path_with_the_stub_and_a_refused_answer_asked_again(tiny, tmp_path, run_tool):
    write_labels(tmp_path / "labels.jsonl", tiny, details=False)
    out = tmp_path / "causal.jsonl"
    with LLMStub() as stub:
        stub.answer = json_answer
        stub.faults = ["bad_answer"]
        result = run_tool(moe_probe, ["causal", str(tiny), str(tmp_path / "labels.jsonl"), "--api-base", stub.url,
                                      "--model", "stub-model", "--no-cache", "--concurrency", "4",
                                      "-o", str(out)])
        assert result.exit_code == 0, result.stderr
        assert len(stub.requests) == 17  # 16 labels, one refused answer asked again
        retried = [r for r in stub.requests if len(r["body"]["messages"]) == 4]
        assert len(retried) == 1 and "could not be used" in retried[0]["body"]["messages"][-1]["content"]
    causal = [r for r in records(out) if r["type"] == "causal"]
    assert all(r["status"] == "ok" for r in causal)
    assert sorted(r["attempts"] for r in causal) == [1] * 15 + [2]
    assert all(r["dropped_targets"] == ["zzz-unknown"] for r in causal)
    assert all("<<expert" in r["messages"][1]["content"] for r in causal)
    planted = next(r for r in causal if (r["layer"], r["expert"]) == (PLANTED_LAYER, PLANTED_EXPERT))
    assert planted["rank"] == 1 and planted["top1"] and planted["proposer"]["backend"] == "openai"


def test_cached_answers_hit_under_the_old_flag_name_and_the_new(tiny, tmp_path, run_tool):
    # --model is the LLM's model as in moe-explain and moe-score; --llm-model still works, with a warning.
    # The cache key is the request identity (backend, endpoint, model, messages, parameters), as before.
    import hashlib

    write_labels(tmp_path / "labels.jsonl", tiny, details=False)
    cache = tmp_path / "cache"

    def probe(stub, *flags):
        return run_tool(moe_probe, ["causal", str(tiny), str(tmp_path / "labels.jsonl"), "--api-base", stub.url,
                                    *flags, "--cache-dir", str(cache), "-o", str(tmp_path / "causal.jsonl")])

    with LLMStub() as stub:
        stub.answer = json_answer
        result = probe(stub, "--llm-model", "stub-model")
        assert result.exit_code == 0 and "--llm-model is deprecated: use --model" in result.stderr
        assert len(stub.requests) == 16
        keys = set()
        for request in stub.requests:
            identity = {"client": {"backend": "openai", "endpoint": stub.url, "model": "stub-model"},
                        "messages": request["body"]["messages"],
                        "parameters": {"temperature": 0.0, "max_tokens": 256}}
            canonical = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
            keys.add(hashlib.sha256(canonical.encode("utf-8")).hexdigest())
        assert {path.stem for path in (cache / "probe").rglob("*.json")} == keys
        first = [r for r in records(tmp_path / "causal.jsonl") if r["type"] in ("causal", "causal_layer")]
        assert probe(stub, "--model", "stub-model", "--force").exit_code == 0 and len(stub.requests) == 16  # all cached
        again = [r for r in records(tmp_path / "causal.jsonl") if r["type"] in ("causal", "causal_layer")]
        assert again == [{**r, "cache_hits": 1, "requests": 0} if r["type"] == "causal" else r for r in first]
        both = probe(stub, "--model", "stub-model", "--llm-model", "stub-model")
        assert both.exit_code == 2 and "--llm-model is the old name of --model" in both.stderr


def test_answers_that_never_parse_fail_without_a_guess(tiny, tmp_path, run_tool):
    write_labels(tmp_path / "labels.jsonl", tiny, details=False)
    out = tmp_path / "causal.jsonl"
    with LLMStub() as stub:  # the default answer is a sentence, never the JSON object
        result = run_tool(moe_probe, ["causal", str(tiny), str(tmp_path / "labels.jsonl"), "--api-base", stub.url,
                                      "--model", "stub-model", "--no-cache", "--attempts", "2", "-o", str(out)])
    assert result.exit_code == 0 and len(stub.requests) == 32
    causal = [r for r in records(out) if r["type"] == "causal"]
    assert all(r["status"] == "failed" and "rank" not in r and r["raw"] for r in causal)
    assert "no label could be attributed" in result.stderr


def test_parse_answer_is_strict():
    assert parse_answer('{"triggers": ["a b"], "targets": ["x"]}') == ((["a b"], ["x"]), None)
    assert parse_answer('```json\n{"triggers": ["a"], "targets": ["x"]}\n```')[0] == (["a"], ["x"])
    for bad in ('Sure! {"triggers": ["a"], "targets": ["x"]}', '{"triggers": [], "targets": ["x"]}',
                '{"triggers": ["a"], "targets": ["two words"]}', '{"triggers": ["a"], "targets": ["x"], "n": 1}',
                '{"triggers": ["a"], "targets": ["x", "y", "z", "u", "v"]}'):
        assert parse_answer(bad)[0] is None


def test_labels_of_another_model_and_a_dense_model_exit_2(tiny, tmp_path, run_tool):
    other = tmp_path / "other"
    save_tiny_olmoe(other, WORDS, seed=1)
    write_labels(tmp_path / "labels.jsonl", other)
    result = run_tool(moe_probe, ["causal", str(tiny), str(tmp_path / "labels.jsonl"), "--backend", "offline",
                                  "-o", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2 and "labels another model" in result.stderr
    dense = tmp_path / "dense"
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=1)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(dense)
    save_word_tokenizer(dense, WORDS)
    result = run_tool(moe_probe, ["causal", str(dense), str(tmp_path / "labels.jsonl"), "--backend", "offline"])
    assert result.exit_code == 2 and "needs an MoE model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
