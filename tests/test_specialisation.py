"""Domain specialisation figures over a synthetic trace written with the real stream writer."""

from __future__ import annotations

import io

import numpy as np
import pytest

from moetools.corpus.specialisation import (
    DomainRouting,
    compare_reports,
    routing_from_stream,
    skewed_experts,
    specialisation_report,
    top_expert_share,
)
from moetools.errors import FormatError, KindError
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
