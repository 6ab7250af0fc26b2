"""moe-trace --top-k K: the routers select K experts (the forward changes, not only the record), the
header says so, and a K the model cannot select exits 2. Real transformers modeling code, tiny configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner

from moetools.cli.trace import command
from moetools.errors import UsageError
from moetools.models.loader import load_model
from moetools.streams import StreamReader
from tests.tiny_models import save_tiny_olmoe, save_word_tokenizer

WORDS = ["the", "a", "of", "to", "and", "in", "is", "code", "law", "math", "cell", "court", "patient", "theorem"]
TOKENS = torch.tensor([[2, 9, 10, 3, 11, 12, 4, 5, 13, 7, 8, 6]])  # (1, T) word ids of the tokenizer above


def save_tiny_qwen3_moe(directory) -> None:
    """Qwen3-MoE with norm_topk_prob: softmax over all experts, top-k, renormalised over the k selected."""
    config = transformers.Qwen3MoeConfig(vocab_size=32, hidden_size=32, intermediate_size=48,
                                         moe_intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                                         num_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
                                         decoder_sparse_step=1, mlp_only_layers=[], pad_token_id=1,
                                         bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    save_word_tokenizer(directory, WORDS)


@pytest.fixture(scope="module", params=["olmoe", "qwen3_moe"])
def model_dir(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    if request.param == "olmoe":
        save_tiny_olmoe(directory, WORDS)
    else:
        save_tiny_qwen3_moe(directory)
    return directory


def reference_logits(directory, k):
    """A plain forward of the checkpoint loaded with the router's top-k set to k in the config."""
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, num_experts_per_tok=k).eval()
    with torch.no_grad():
        return model(TOKENS).logits  # (1, T, V)


@pytest.mark.parametrize("k", [1, 4])
def test_override_computes_what_a_config_with_that_k_computes(model_dir, k):
    model, _, adapter = load_model(str(model_dir))
    adapter.override_top_k(k)
    assert {layer.top_k for layer in adapter.moe_layers()} == {k}
    with adapter.capture() as capture, torch.no_grad():
        logits = model(TOKENS).logits
        layers = capture.take()
    assert torch.equal(logits, reference_logits(model_dir, k))
    native = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        assert not torch.allclose(native(TOKENS).logits, logits)  # the forward changed, not only the record
    for layer in layers:
        assert layer["ids"].shape == (TOKENS.numel(), k)
        assert layer["ids"].unique(dim=-1).shape[-1] == k  # k distinct experts per token
        if k == 1 and adapter.routing_rule().renormalize:
            assert torch.allclose(layer["gates"].float(), torch.ones(TOKENS.numel(), 1))  # p_i / p_i


def test_cli_trace_with_top_k_1_has_one_expert_per_token(model_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": " ".join(WORDS[i:i + 7])}) + "\n" for i in range(5)))
    output = tmp_path / "trace.msgpack.zst"
    result = CliRunner().invoke(command, [str(model_dir), str(corpus), "--top-k", "1", "--batch-size", "1",
                                          "-o", str(output)])
    assert result.exit_code == 0, result.output
    with open(output, "rb") as handle:
        reader = StreamReader(handle, kinds="trace", validate=True)
        records = list(reader)
    header = reader.header
    assert header["top_k"] == 1 and header["top_k_override"] == 1
    assert header["model"]["top_k"] == 2  # the checkpoint's identity is unchanged
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, num_experts_per_tok=1).eval()
    routing = []  # (T, 1) selected ids of each router call, in layer order
    for layer in model.model.layers:
        layer.mlp.gate.register_forward_hook(lambda module, args, output: routing.append(output[2]))
    for record in records:
        assert record["experts"].shape == (2, len(record["tokens"]), 1)
        routing.clear()
        with torch.no_grad():
            model(torch.tensor(record["tokens"].astype(np.int64))[None])
        for layer, ids in enumerate(routing):
            assert np.array_equal(record["experts"][layer], ids.numpy())


def test_header_without_override_says_null(model_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "d", "text": "the law of code"}) + "\n")
    output = tmp_path / "trace.msgpack.zst"
    assert CliRunner().invoke(command, [str(model_dir), str(corpus), "-o", str(output)]).exit_code == 0
    with open(output, "rb") as handle:
        header = StreamReader(handle, kinds="trace").header
    assert header["top_k"] == 2 and header["top_k_override"] is None


@pytest.mark.parametrize("k", ["0", "9", "-1"])
def test_bad_k_exits_2(model_dir, tmp_path, k):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "d", "text": "the law"}) + "\n")
    output = tmp_path / "trace.msgpack.zst"
    result = CliRunner().invoke(command, [str(model_dir), str(corpus), "--top-k", k, "-o", str(output)])
    assert result.exit_code == 2, result.output
    assert "--top-k" in result.output and "Traceback" not in result.output
    assert not output.exists()


def test_schema_refuses_an_override_that_disagrees_with_top_k():
    from moetools.errors import FormatError
    from moetools.streams.schema import schema_for

    header = {"layers": [0], "num_experts": 8, "top_k": 2, "top_k_override": 1}
    with pytest.raises(FormatError):
        schema_for("trace").check_header(header)
    schema_for("trace").check_header({**header, "top_k_override": 2})
    schema_for("trace").check_header({**header, "top_k_override": None})


def test_monet_refuses_an_override(tmp_path):
    import moetools.models.monet  # noqa: F401  (registers MONET with the Auto classes)
    from moetools.models.monet.configuration_monet import MonetConfig
    from moetools.models.registry import adapter_for

    config = MonetConfig(vocab_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         moe_experts=4, moe_heads=2, moe_dim=8, moe_topk=2)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with pytest.raises(UsageError, match="--top-k"):
        adapter_for(model).override_top_k(1)


def test_traces_of_another_top_k_do_not_concatenate():
    """A --top-k 1 trace and a native trace of the same model are one model but not one stream."""
    import io

    from moetools.errors import ModelMismatchError
    from moetools.streams import StreamReader, StreamWriter

    def segment(top_k):
        out = io.BytesIO()
        with StreamWriter(out, "example", model={"fingerprint": "v2:sha256:same"}, header_extra={"top_k": top_k}):
            pass
        return out.getvalue()

    with pytest.raises(ModelMismatchError, match="top_k 1"):
        list(StreamReader(io.BytesIO(segment(2) + segment(1))))
    assert list(StreamReader(io.BytesIO(segment(2) + segment(2)))) == []
