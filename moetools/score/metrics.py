"""The routing metrics of the papers, as functions of the sums in :mod:`moetools.score.routing`.

Shapes: ``sums`` arrays are (L, E) for one token set (a domain, or the general data) unless said
otherwise; ``tokens`` is that set's token count |T|. Division by an empty set gives NaN (written as
null in the scores stream).
"""

from __future__ import annotations

import numpy as np


def _div(numerator, denominator):
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def activation_frequency(selected, tokens):
    """AF (paper 000, eq. 6): AF_i^(d) = (1/|T_d|) Σ_{t∈T_d} 1[E'_i(t)], the share of domain-d
    tokens whose top-K experts include i. ``selected`` (L, E) = Σ_t 1[i ∈ topK(t)]."""
    return _div(selected, tokens)


def mean_routing_score(prob, tokens):
    """Mean routing probability (1/|D|) Σ_{t∈D} g_t with g_t the full router probability p_i(x_t)
    (the trace's ``prob_sum``): the two terms of DAS (003 eq. 1), the per-domain routing
    probability of the skew criterion (004 §5.1) and g_ij of RC (003 eq. 4)."""
    return _div(prob, tokens)


def domain_advantage(prob_domain, tokens_domain, prob_general, tokens_general):
    """DAS (paper 003, eq. 1): DAS(D_d, D_g) = (1/|D_d|) Σ_{t∈D_d} g_t − (1/|D_g|) Σ_{t∈D_g} g_t."""
    return mean_routing_score(prob_domain, tokens_domain) - mean_routing_score(prob_general, tokens_general)


def direct_routing_score(gate, tokens):
    """003 Table 5 "Score": the average gate score of the expert on the domain data,
    (1/|T_d|) Σ_t g_i(t) with g_i(t) = 0 where i is not selected."""
    return _div(gate, tokens)


def expert_output_norm(norm, selected):
    """003 Table 5 "ExpLen": the average ‖E_i(x)‖₂ over the domain tokens routed to i."""
    return _div(norm, selected)


def score_times_norm(contribution, tokens):
    """003 Table 5 "EC" / "PSN": the average of g_i(x)·‖E_i(x)‖₂ (the expert's contribution to the
    residual stream, paper 002) over the domain tokens, 0 where i is not selected. The trace holds
    exactly this product, so EC and PSN are one number here (003 gives no separate formula)."""
    return _div(contribution, tokens)


def reap_saliency(contribution, selected):
    """REAP saliency (Lasby et al. 2025, "REAP: Router-weighted Expert Activation Pruning"):
    S_i = (1/|X_i|) Σ_{x∈X_i} g_i(x)·‖E_i(x)‖₂ over the tokens X_i routed to i."""
    return _div(contribution, selected)


def esft_token_score(selected, axis: int = -1):
    """ESFT token selection ratio (Wang et al. 2024, ESFT; deepseek-ai/ESFT
    generate_expert_config.py): per token each selected expert gets 1/K, summed over tokens and
    normalised over the experts of the layer, r_i = Σ_t 1[i∈topK(t)]/K / Σ_j Σ_t 1[j∈topK(t)]/K.
    With K slots filled per token this equals AF_i / K (the paper's per-token average)."""
    return _div(selected, np.sum(selected, axis=axis, keepdims=True))


def esft_gate_score(gate, tokens):
    """ESFT average gate score (Wang et al. 2024, ESFT, "Expert Relevance Score"; deepseek-ai/ESFT
    ``scripts/get_expert_scores.py``): the expert's gates summed over the tokens and divided by the
    number of tokens T, s_i = Σ_t g_i(t) / T (g_i(t) = 0 where i is not selected). ESFT's code
    divides by Σ_j Σ_t 1[j∈topK(t)]/K, which is T when every token fills its K slots (DeepSeek-V2-Lite
    always does). Not normalised over the layer: a row sums to the mean total gate per token (its
    released ``summary.json`` gate rows sum to 0.26-0.53); only the token score sums to 1. The
    same number as :func:`direct_routing_score` (003's "Score")."""
    return _div(gate, tokens)


def cumulative_das(das, k: int):
    """C-DAS@k (paper 003, eq. 2), per layer and summed over layers:
    C-DAS@k = Σ_i Σ_{j∈T_i} max(DAS_ij, 0) / Σ_{j=1..N} max(DAS_ij, 0),
    T_i the top-k experts of layer i by DAS. ``das`` (L, E); returns (per_layer (L,), total).
    A layer with no positive DAS contributes 0."""
    das = np.nan_to_num(np.asarray(das, dtype=np.float64), nan=-np.inf)
    positive = np.maximum(das, 0.0)
    k = max(0, min(int(k), das.shape[-1]))
    top = -np.sort(-das, axis=-1)[..., :k]
    head = np.maximum(top, 0.0).sum(axis=-1)
    total = positive.sum(axis=-1)
    per_layer = np.where(total > 0, head / np.where(total > 0, total, 1.0), 0.0)
    return per_layer, float(per_layer.sum())


def routing_consistency(before, after):
    """RC (paper 003, eq. 4-5): shift_ij = ‖g_ij^(2) − g_ij^(1)‖², RC = (1/(L·N)) Σ_ij shift_ij, with
    g_ij the average routing score of expert j in layer i before (1) and after (2) tuning.
    ``before``/``after`` (L, E); returns (shift (L, E), RC)."""
    shift = (np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)) ** 2
    return shift, float(np.nanmean(shift)) if shift.size else float("nan")


def skew(mean_prob):
    """Domain skew (paper 004 §5.1 and Appendix D.1): expert i is specialised in domain d when its
    routing probability on d is at least r (2) times that of the runner-up domain.
    ``mean_prob`` (D, L, E) mean routing probability per domain; returns (best domain index (L, E),
    ratio best / runner-up (L, E); inf where the runner-up is 0, NaN with fewer than 2 domains)."""
    mean_prob = np.nan_to_num(np.asarray(mean_prob, dtype=np.float64), nan=0.0)
    if mean_prob.shape[0] < 2:
        shape = mean_prob.shape[1:]
        return np.zeros(shape, dtype=np.int64), np.full(shape, np.nan)
    order = np.argsort(-mean_prob, axis=0, kind="stable")
    best = order[0]
    top = np.take_along_axis(mean_prob, order[:1], axis=0)[0]
    second = np.take_along_axis(mean_prob, order[1:2], axis=0)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(second > 0, top / np.where(second > 0, second, 1.0), np.where(top > 0, np.inf, np.nan))
    return best, ratio


def pearson(x, y):
    """Pearson correlation (paper 004 §5.2, toxic expert purging) across documents between each
    expert's mean routing probability x (N, L, E) and a per-document value y (N,):
    r = Σ(x−x̄)(y−ȳ) / sqrt(Σ(x−x̄)² Σ(y−ȳ)²); NaN where either side is constant. Returns (L, E)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    dx = x - x.mean(axis=0, keepdims=True)
    dy = (y - y.mean())[:, None, None]
    numerator = (dx * dy).sum(axis=0)
    denominator = np.sqrt((dx * dx).sum(axis=0) * float((dy * dy).sum()))
    return _div(numerator, denominator)


def benjamini_hochberg(p):
    """Benjamini-Hochberg q-values (FDR) of the p-values ``p`` (any shape, NaN ignored):
    q_(i) = min_{j≥i} p_(j)·m/j over the m finite p-values sorted ascending, capped at 1."""
    p = np.asarray(p, dtype=np.float64)
    flat = p.reshape(-1)
    finite = np.flatnonzero(np.isfinite(flat))
    q = np.full(flat.shape, np.nan)
    m = finite.size
    if m:
        order = finite[np.argsort(flat[finite], kind="stable")]
        ranked = flat[order] * m / np.arange(1, m + 1)
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]
        q[order] = np.minimum(ranked, 1.0)
    return q.reshape(p.shape)


__all__ = ["activation_frequency", "benjamini_hochberg", "cumulative_das", "direct_routing_score",
           "domain_advantage", "esft_gate_score", "esft_token_score", "expert_output_norm",
           "mean_routing_score", "pearson", "reap_saliency", "routing_consistency", "score_times_norm",
           "skew"]
