"""ESFT's average gate score and its top-p selection on a trace small enough to compute by hand.

ESFT (Wang et al. 2024; deepseek-ai/ESFT ``scripts/get_expert_scores.py``) sums each expert's gate
over the tokens and divides by the token count T: the gate score is not normalised over the
layer's experts (only the token score is). ``scripts/generate_expert_config.py`` then walks the
experts by descending score and stops once the running sum has reached p (checked before adding
each expert). Every expected number below is written out by hand from those two rules.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from moetools.cli.score import command as moe_score
from moetools.cli.select import command as moe_select
from tests.trace_factory import header_extra

MODEL = {"name": "esft-hand", "path": None, "model_type": "deepseek_v2", "num_layers": 3, "moe_layers": [0, 2],
         "num_experts": 4, "top_k": 2, "fingerprint": "sha256:" + "e5" * 32}

# four tokens of one "law" document; per MoE layer (0 and 2) and token: (expert, gate) of the K = 2 slots.
# Gates are DeepSeek-style, not renormalised: a token's gates sum to less than 1.
ROUTING = {
    0: [[(0, 0.5), (1, 0.25)], [(0, 0.375), (2, 0.125)], [(1, 0.25), (0, 0.25)], [(3, 0.125), (0, 0.5)]],
    2: [[(2, 0.75), (3, 0.125)], [(2, 0.5), (1, 0.25)], [(3, 0.5), (2, 0.25)], [(2, 0.625), (0, 0.125)]],
}
# Σ_t g_i(t) / T with T = 4 tokens:
#   layer 0: expert 0 (0.5+0.375+0.25+0.5)/4 = 0.40625, 1 (0.25+0.25)/4 = 0.125, 2 0.125/4 = 0.03125, 3 0.03125
#   layer 2: expert 0 0.125/4 = 0.03125, 1 0.25/4 = 0.0625, 2 (0.75+0.5+0.25+0.625)/4 = 0.53125, 3 0.625/4 = 0.15625
ESFT_GATE = {0: [0.40625, 0.125, 0.03125, 0.03125], 2: [0.03125, 0.0625, 0.53125, 0.15625]}
# token score: selections / K, over T: layer 0 counts 4, 2, 1, 1 -> 0.5, 0.25, 0.125, 0.125 (sums to 1)
ESFT_TOKEN = {0: [0.5, 0.25, 0.125, 0.125], 2: [0.125, 0.125, 0.5, 0.25]}
# ESFT's top-p, running sums in brackets (ties by expert id, as ESFT's stable sort of ids 0..E-1):
#   p 0.2:  layer 0: 0 [0.40625] stop                       layer 2: 2 [0.53125] stop
#   p 0.5:  layer 0: 0 [0.40625], 1 [0.53125] stop          layer 2: 2 [0.53125] stop
#   p 0.55: layer 0: 0, 1 [0.53125], 2 [0.5625] stop        layer 2: 2 [0.53125], 3 [0.6875] stop
#   p 0.6:  layer 0: 0, 1, 2 [0.5625], 3 [0.59375] (all)    layer 2: 2, 3 [0.6875] stop
SELECTED = {0.2: {"0": [0], "2": [2]}, 0.5: {"0": [0, 1], "2": [2]}, 0.55: {"0": [0, 1, 2], "2": [2, 3]},
            0.6: {"0": [0, 1, 2, 3], "2": [2, 3]}}


def hand_trace() -> list[dict]:
    experts = np.array([[[e for e, _ in slots] for slots in ROUTING[layer]] for layer in (0, 2)], dtype="|u1")
    gates = np.array([[[g for _, g in slots] for slots in ROUTING[layer]] for layer in (0, 2)], dtype="<f4")
    prob_sum = np.array([[2.0, 1.0, 0.5, 0.5], [0.5, 0.5, 2.0, 1.0]], dtype="<f4")   # rows sum to T
    return [{"type": "sequence", "doc_id": "law-1", "window": 0, "offset": 0, "meta": {"domain": "law"},
             "tokens": np.array([5, 6, 7, 8], dtype="<i4"), "pieces": ["the", " court", " held", " that"],
             "experts": experts, "gates": gates, "contribution": gates * 2, "prob_sum": prob_sum}]


@pytest.fixture
def scores(make_stream, run_tool, tmp_path):
    trace = tmp_path / "law.trace.msgpack.zst"
    trace.write_bytes(make_stream(hand_trace(), model=MODEL,
                                  header_extra=header_extra(layers=(0, 2), num_experts=4, top_k=2, max_length=8)))
    result = run_tool(moe_score, [str(trace), "--permutations", "0", "-q"])
    assert result.exit_code == 0, result.stderr
    path = tmp_path / "law.scores.jsonl"
    path.write_text(result.stdout)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return path, {(r["layer"], r["expert"]): r["domains"]["law"] for r in records if r["type"] == "expert"}


def test_esft_gate_is_the_gate_sum_over_the_token_count_not_normalised_over_the_layer(scores):
    _, values = scores
    for layer in (0, 2):
        assert [values[(layer, e)]["esft_gate"] for e in range(4)] == pytest.approx(ESFT_GATE[layer], abs=1e-12)
        assert [values[(layer, e)]["esft_token"] for e in range(4)] == pytest.approx(ESFT_TOKEN[layer], abs=1e-12)
    # rows of the gate score sum to the mean total gate per token (0.59375, 0.78125), not to 1
    assert sum(values[(0, e)]["esft_gate"] for e in range(4)) == pytest.approx(0.59375)
    assert sum(values[(2, e)]["esft_gate"] for e in range(4)) == pytest.approx(0.78125)


@pytest.mark.parametrize("top_p", sorted(SELECTED))
def test_cumulative_selection_by_esft_gate_is_esfts_top_p(scores, run_tool, top_p):
    path, _ = scores
    result = run_tool(moe_select, [str(path), "--by", "esft_gate", "--cumulative", str(top_p)])
    assert result.exit_code == 0, result.stderr
    chosen = json.loads(result.stdout)["experts"]
    assert {layer: sorted(ids) for layer, ids in chosen.items()} == SELECTED[top_p]
