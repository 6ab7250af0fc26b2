"""Domain specialisation figures over a synthetic trace written with the real stream writer."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

from moetools.errors import FormatError, KindError
from moetools.score.specialisation import (
    DomainRouting,
    compare_reports,
    routing_from_stream,
    skewed_experts,
    specialisation_report,
    top_expert_share,
)
from moetools.streams import StreamWriter

# per-token router distribution (L=2, E=4) of each domain; layer 1 is uniform everywhere
DISTRIBUTIONS = {
    "code": [[0.7, 0.12, 0.09, 0.09], [0.25] * 4],
    "legal": [[0.12, 0.7, 0.09, 0.09], [0.25] * 4],
    "math": [[0.3, 0.3, 0.2, 0.2], [0.25] * 4],
}
LENGTHS = {"code": [5, 7], "legal": [4], "math": [3, 3, 6]}
MODEL = {"name": "synthetic", "model_type": "test", "num_layers": 2, "moe_layers": [0, 1], "num_experts": 4,
         "top_k": 1, "fingerprint": "sha256:00"}


def synthetic_trace(encoding: str = "msgpack", uniform_everywhere: bool = False) -> bytes:
    out = io.BytesIO()
    writer = StreamWriter(out, "trace", tool={"name": "test"}, model=MODEL, encoding=encoding,
                          header_extra={"layers": [0, 1], "num_experts": 4, "top_k": 1})
    for domain, lengths in LENGTHS.items():
        distribution = np.full((2, 4), 0.25) if uniform_everywhere else np.array(DISTRIBUTIONS[domain])
        for index, length in enumerate(lengths):
            writer.write({"type": "sequence", "doc_id": f"{domain}:{index}#0", "window": 0, "offset": 0,
                          "meta": {"domain": domain}, "tokens": np.arange(length, dtype="<i4"),
                          "prob_sum": (distribution * length).astype("<f4")})
    writer.write({"type": "sequence", "doc_id": "nodomain", "window": 0, "offset": 0, "meta": {},
                  "tokens": np.arange(2, dtype="<i4"), "prob_sum": np.full((2, 4), 0.5, dtype="<f4")})
    writer.close()
    return out.getvalue()


@pytest.fixture(params=["msgpack", "jsonl"])
def routing(request):
    routing, header = routing_from_stream(io.BytesIO(synthetic_trace(request.param)))
    assert header["model"]["name"] == "synthetic"
    return routing


def test_accumulates_mass_and_tokens_per_domain(routing):
    assert routing.tokens == {"code": 12, "legal": 4, "math": 12}
    assert routing.sequences == 6 and routing.skipped_without_domain == 1
    domains, probability = routing.mean_probability()
    assert domains == ["code", "legal", "math"]
    np.testing.assert_allclose(probability, np.array([DISTRIBUTIONS[d] for d in domains]), rtol=1e-6)


def test_skew_criterion_counts_experts_twice_the_runner_up(routing):
    result = skewed_experts(routing, ratio=2.0)
    # layer 0: expert 0 code (.7 vs .3), 1 legal (.7 vs .3), 2 and 3 math (.2 vs .09); layer 1 uniform: none
    assert result["per_layer"] == [4, 0]
    assert result["by_domain"] == {"code": 1, "legal": 1, "math": 2}
    assert result["total"] == 4 and result["share"] == pytest.approx(4 / 8)
    assert skewed_experts(routing, ratio=2.3)["by_domain"] == {"code": 1, "legal": 1, "math": 0}
    assert skewed_experts(routing, min_probability=0.5)["total"] == 2


def test_top_expert_share_and_its_gap_against_other_domains(routing):
    result = top_expert_share(routing, k=1)
    code = result["domains"]["code"]
    assert code["share_per_layer"] == pytest.approx([0.7, 0.25])
    # expert 0 in the other domains, pooled by tokens: (4 * .12 + 12 * .3) / 16 = .255
    assert code["elsewhere_per_layer"] == pytest.approx([0.255, 0.25])
    assert code["gap"] == pytest.approx((0.7 - 0.255) / 2)
    math = result["domains"]["math"]
    assert math["share_per_layer"][0] == pytest.approx(0.3)  # ties broken by expert order: expert 0
    assert result["uniform"] == 0.25
    assert top_expert_share(routing, k=10)["k"] == 4  # k clamped to E; then everything is captured
    assert top_expert_share(routing, k=10)["domains"]["legal"]["share"] == pytest.approx(1.0)


def test_trained_against_random_comparison():
    trained = specialisation_report(routing_from_stream(io.BytesIO(synthetic_trace()))[0], k=1)
    untrained = specialisation_report(
        routing_from_stream(io.BytesIO(synthetic_trace(uniform_everywhere=True)))[0], k=1)
    assert untrained["skewed_experts"]["total"] == 0
    assert untrained["top_expert_share"]["mean_gap"] == pytest.approx(0.0)
    comparison = compare_reports(trained, untrained)
    assert comparison["skewed_experts"] == {"trained": 4, "random": 0, "ratio": None}
    assert comparison["more_specialised_than_random"] is True
    assert compare_reports(untrained, trained)["more_specialised_than_random"] is False


def test_bad_traces_are_refused():
    routing = DomainRouting()
    routing.add({"type": "sequence", "meta": {"domain": "a"}, "tokens": np.zeros(3), "prob_sum": np.ones((2, 4))})
    with pytest.raises(FormatError, match="differs"):
        routing.add({"type": "sequence", "meta": {"domain": "b"}, "tokens": np.zeros(3),
                     "prob_sum": np.ones((2, 5))})
    with pytest.raises(FormatError, match="two domains"):
        skewed_experts(routing)
    with pytest.raises(FormatError, match="prob_sum"):
        routing.add({"type": "sequence", "meta": {"domain": "a"}, "tokens": np.zeros(3)})
    with pytest.raises(FormatError, match="no trace records with a domain"):
        DomainRouting().mean_probability()
    out = io.BytesIO()
    writer = StreamWriter(out, "labels", tool={"name": "test"}, encoding="jsonl")
    writer.close()
    with pytest.raises(KindError):
        routing_from_stream(io.BytesIO(out.getvalue()))


# -- bench/bench_specialisation.py ---------------------------------------------------------------

def load_bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "bench_specialisation.py"
    if str(path.parent) not in sys.path:  # its bench/_harness.py, as `python bench/bench_specialisation.py` finds it
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("bench_specialisation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_on_given_traces_writes_results_and_a_plain_verdict(tmp_path, capsys):
    trained, untrained = tmp_path / "trained.msgpack.zst", tmp_path / "random.msgpack.zst"
    trained.write_bytes(synthetic_trace())
    untrained.write_bytes(synthetic_trace(uniform_everywhere=True))
    output = tmp_path / "results.json"
    assert load_bench().main(["--traces", "synthetic", str(trained), str(untrained), "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert results["models"]["synthetic"]["comparison"]["skewed_experts"]["trained"] == 4
    printed = capsys.readouterr().out
    assert "MORE specialised than its random-init copy" in printed
    load_bench().main(["--traces", "swapped", str(untrained), str(trained), "--output", str(output)])
    assert "NOT more specialised" in capsys.readouterr().out


@pytest.mark.slow  # two moe-trace processes: 20-45 s on 2 cores
def test_bench_traces_a_model_and_its_random_init_copy(tmp_path, capsys):
    """End to end through moe-trace on a tiny random OLMoE (about 20 s: two moe-trace processes)."""
    pytest.importorskip("moetools.cli.trace")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import OlmoeConfig, OlmoeForCausalLM, PreTrainedTokenizerFast

    texts = {"code": "def add(a, b):\n    return a + b\n", "legal": "Permission is hereby granted, free of charge."}
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(list(texts.values()) * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model_dir = tmp_path / "tiny"
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<eos>").save_pretrained(model_dir)
    config = OlmoeConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, num_experts=4,
                         num_experts_per_tok=2, max_position_embeddings=64, pad_token_id=0, eos_token_id=0)
    OlmoeForCausalLM(config).save_pretrained(model_dir)
    corpus = tmp_path / "validation.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"{d}:{i}#0", "text": t * (i + 1), "domain": d, "token_count": 10}) + "\n"
                              for i in range(3) for d, t in texts.items()))
    output = tmp_path / "results.json"
    assert load_bench().main(["--model", str(model_dir), "--corpus", str(corpus), "--tokens-per-domain", "20",
                              "--max-length", "32", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    entry = results["models"]["tiny"]
    assert entry["trained"]["experts_per_layer"] == 4 and entry["trained"]["layers"] == 2
    assert entry["trained"]["top_expert_share"]["k"] == 2
    assert set(entry["random"]["tokens"]) == {"code", "legal"}
    assert results["corpus_tokens_per_domain"] == {"code": 20, "legal": 20}  # two records each
    assert "verdict" in capsys.readouterr().out
