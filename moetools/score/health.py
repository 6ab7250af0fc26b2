"""Routing health: is a layer's router using its experts, or has it collapsed onto a few?

From one count per (layer, expert), ``routed[l, e]`` = Σ_t 1[e ∈ topK_l(t)] over T tokens (the
scored tokens: every token with a domain), with K experts per token and E per layer:

- ``share[l, e]`` = routed / (K·T): the expert's share of the layer's routing slots (sums to 1);
  a uniform router gives 1/E (what MONET's uniformity loss aims at, [004 eq. 16-18]).
- ``tokens[l, e]`` = routed / T: the share of tokens whose top-K holds the expert (AF over all
  domains, [000 eq. 6]); a uniform router gives K/E.
- per layer: ``entropy`` H = −Σ_e share·log2 share (bits), ``entropy_norm`` = H / log2 E
  (1 = uniform, 0 = one expert takes every slot), ``max_share`` and its expert, the dead and the
  always-on experts, and ``collapsed``.

Thresholds (:data:`THRESHOLDS`, written with the numbers so a reader sees what was applied):

- **dead**: routed fewer than ``dead_below`` (1%) of the tokens a uniform router would send it
  (T·K/E); judged only where T·K/E ≥ ``min_expected`` (10), else null: with fewer tokens an
  expert routed nothing may just not have met its tokens.
- **always-on**: in the top-K of at least ``always_on`` (90%) of the tokens; judged only where
  K/E ≤ 0.5 (else a uniform router is near that share already), else null.
- **collapsed** layer: ``entropy_norm`` < ``collapsed_below`` (0.5): e.g. two of 8 experts
  taking every token with K = 2 gives 1/3.

For layers that share one router (MONET ``moe_groups``) the counts are the router's: one row per
router, as every routing metric (formats/scores.md *Shared routers*).
"""

from __future__ import annotations

import math

import numpy as np

THRESHOLDS = {"dead_below": 0.01, "min_expected": 10.0, "always_on": 0.9, "collapsed_below": 0.5}


def expert_health(routed: np.ndarray, tokens: float, top_k: int, thresholds: dict = THRESHOLDS) -> dict:
    """Per (layer, expert) arrays: ``share``, ``tokens`` (floats), ``dead``, ``always_on`` (float: 1, 0
    or NaN where not judged). ``routed``: (L, E) counts over ``tokens`` tokens."""
    routed = np.asarray(routed, dtype=np.float64)
    experts = routed.shape[-1]
    slots = max(tokens * top_k, 1e-300)
    share = routed / slots
    token_share = routed / max(tokens, 1e-300)
    expected = tokens * top_k / experts
    dead = (routed < thresholds["dead_below"] * expected).astype(np.float64)
    if tokens <= 0 or expected < thresholds["min_expected"]:
        dead[:] = np.nan
    always = (token_share >= thresholds["always_on"]).astype(np.float64)
    if tokens <= 0 or top_k / experts > 0.5:
        always[:] = np.nan
    return {"share": share, "tokens": token_share, "dead": dead, "always_on": always}


def layer_health(per_expert: dict, layers: list, thresholds: dict = THRESHOLDS) -> dict:
    """``{str(layer): {entropy, entropy_norm, max_share, max_expert, dead, always_on, collapsed}}``;
    ``dead`` and ``always_on`` list expert ids (null where not judged)."""
    out = {}
    share = per_expert["share"]
    experts = share.shape[-1]
    for index, layer in enumerate(layers):
        row = share[index]
        total = float(row.sum())
        if total <= 0:
            out[str(layer)] = {"entropy": None, "entropy_norm": None, "max_share": None, "max_expert": None,
                               "dead": None, "always_on": None, "collapsed": None}
            continue
        p = row[row > 0] / total
        entropy = float(-(p * np.log2(p)).sum())
        norm = entropy / math.log2(experts) if experts > 1 else 1.0
        dead, always = per_expert["dead"][index], per_expert["always_on"][index]
        out[str(layer)] = {
            "entropy": round(entropy, 4), "entropy_norm": round(norm, 4),
            "max_share": round(float(row.max()), 4), "max_expert": int(row.argmax()),
            "dead": None if np.isnan(dead).all() else [int(e) for e in np.flatnonzero(dead == 1)],
            "always_on": None if np.isnan(always).all() else [int(e) for e in np.flatnonzero(always == 1)],
            "collapsed": bool(norm < thresholds["collapsed_below"])}
    return out


def flagged(layer: dict) -> list[str]:
    """What is wrong with one layer of :func:`layer_health`, in words ([] when nothing)."""
    words = []
    if layer.get("collapsed"):
        words.append(f"collapsed (normalised load entropy {layer['entropy_norm']})")
    if layer.get("dead"):
        words.append(f"{len(layer['dead'])} dead")
    if layer.get("always_on"):
        words.append(f"{len(layer['always_on'])} always-on")
    return words


#: a layer whose busiest expert takes more than this multiple of the uniform share (1/E) of all its routing
#: slots, every domain together, counts as collapsed in the demo's collapse check (two of 8 experts taking
#: every token with k = 2 is 4x). Judged on all domains together: one expert taking most of one domain's
#: tokens is specialisation, not collapse (the per-domain figure is reported beside it).
COLLAPSE_FACTOR = 3.0


def max_share_vs_uniform(routed: np.ndarray) -> list[dict]:
    """Per layer, the busiest expert's share of the layer's routing slots against uniform.

    ``routed``: (D, L, E) routed counts per domain. Returns, per layer index, ``{"vs_uniform": max over
    experts of Σ_d routed / Σ_d,e routed · E, "expert": id, "worst_domain_vs_uniform": the same within one
    domain (max over domains), "worst_domain": index}`` (None where no domain routed a token there);
    1 = every expert equally busy."""
    routed = np.asarray(routed, dtype=np.float64)
    experts = routed.shape[-1]
    pooled = routed.sum(axis=0)                                   # (L, E)
    pooled_total = pooled.sum(axis=-1, keepdims=True)
    pooled_ratio = np.divide(pooled, pooled_total, out=np.zeros_like(pooled), where=pooled_total > 0) * experts
    totals = routed.sum(axis=-1, keepdims=True)
    ratio = np.divide(routed, totals, out=np.zeros_like(routed), where=totals > 0) * experts  # (D, L, E)
    out = []
    for layer in range(routed.shape[1]):
        if not pooled_total[layer, 0] > 0:
            out.append({"vs_uniform": None, "expert": None, "worst_domain_vs_uniform": None, "worst_domain": None})
            continue
        block = ratio[:, layer, :]
        domain, _ = np.unravel_index(int(block.argmax()), block.shape)
        out.append({"vs_uniform": round(float(pooled_ratio[layer].max()), 3),
                    "expert": int(pooled_ratio[layer].argmax()),
                    "worst_domain_vs_uniform": round(float(block.max()), 3), "worst_domain": int(domain)})
    return out


def summary(routed: np.ndarray, tokens: float, top_k: int, layers: list) -> tuple[dict, dict]:
    """(per-expert arrays, the end record's ``summary.health``)."""
    per_expert = expert_health(routed, tokens, top_k)
    return per_expert, {"tokens": int(tokens), "top_k": int(top_k), "thresholds": dict(THRESHOLDS),
                        "layers": layer_health(per_expert, layers)}


__all__ = ["COLLAPSE_FACTOR", "THRESHOLDS", "expert_health", "flagged", "layer_health", "max_share_vs_uniform", "summary"]
