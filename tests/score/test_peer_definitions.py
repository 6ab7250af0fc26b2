"""formats/scores.md says, beside each metric, where it departs from the peers' released code.

A user comparing a number with a published one needs to know which definition each column holds:
REAP's default on Mixtral, MoE_analysis' contribution and its ``spec.py`` JSD (formats/scores.md,
*Against the peers' released code*). Each metric's own row or section must say so, not only a
paragraph elsewhere; moe-score's header definitions carry the short form.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from moetools.score.scorer import METRICS

SCORES_MD = (Path(__file__).resolve().parents[2] / "formats" / "scores.md").read_text(encoding="utf-8")


def row(metric: str) -> str:
    match = re.search(rf"^\| `{metric}` \|.*$", SCORES_MD, flags=re.MULTILINE)
    assert match, f"no table row for {metric}"
    return match.group(0)


def section(title: str) -> str:
    assert title in SCORES_MD, f"formats/scores.md has no {title}"
    start = SCORES_MD.index(title)
    end = SCORES_MD.find("\n#", start + 1)
    return SCORES_MD[start:end]


def peers() -> str:
    return section("**Against the peers' released code.**")


@pytest.mark.parametrize("metric, beside, details", [
    ("reap", ["renormalize_router_weights", "3.5×", "Mixtral"], ["norm_topk_prob", "MixtralConfig", "4.5e-8"]),
    ("psn", ["MoE_analysis", "4.2e-7"], ["g·‖E‖"]),
    ("esft_gate", ["not** normalised", "get_expert_scores.py"], []),
])
def test_each_metric_row_names_where_it_departs_from_the_peer_code(metric, beside, details):
    text = row(metric)
    for needle in beside:
        assert needle in text, (metric, needle)
    for needle in details:
        assert needle in peers(), (metric, needle)


def test_the_jsd_section_names_spec_py_line_132_and_the_final_norm_of_line_158():
    jsd = section("### JSD specialisation")
    for text in (jsd, peers()):
        assert ".sum(dim=1)" in text and "line 132" in text
        assert "spec.py:158" in text and "final norm" in text


def test_moe_score_header_definitions_say_which_definition_the_numbers_follow():
    assert "renormalize_router_weights" in METRICS["reap"][1]
    assert "final norm" in METRICS["jsd_functional"][1]
    assert "sum to 1" in METRICS["esft_gate"][1] and "normalised over the layer" not in METRICS["esft_gate"][1]
