"""How much of the domain skew (paper 004 §5.1) is chance: a permutation test per expert.

With many experts and few tokens per domain, "routing probability ≥ 2× the runner-up domain"
is passed by many experts of a random router too (the demo's MONET-VD: 3,128 experts against
4,692 for a random-init copy). The null hypothesis is that an expert's routing does not depend on
the domain: then the documents' domain labels are exchangeable. For each expert the statistic is
its skew ratio (best domain's mean routing probability / runner-up's, :func:`metrics.skew`),
computed again with the labels shuffled across documents (seeded):

    p = (1 + #{b : ratio_b ≥ ratio_obs}) / (1 + B)       (B random shuffles)

or, when the label multiset has at most B distinct arrangements, exactly, over all of them
(p = #{arrangements with ratio ≥ ratio_obs} / #arrangements, the observed one included).
q-values: Benjamini-Hochberg over all (layer, expert) tests. The count of experts passing the
2× criterion expected under no specialisation is the mean count over the shuffles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .metrics import benjamini_hochberg


@dataclass
class SkewTest:
    p: np.ndarray                 # (L, E) permutation p-value of the skew ratio
    q: np.ndarray                 # (L, E) Benjamini-Hochberg q-value
    expected_count: np.ndarray    # (L,) mean number of experts with ratio ≥ min_ratio under the null
    permutations: int             # shuffles (or arrangements) evaluated
    exact: bool                   # True: every distinct arrangement was enumerated


def arrangements(labels) -> int:
    """Distinct orderings of the label multiset: N! / Π_d n_d!."""
    counts = np.bincount(np.asarray(labels))
    total = math.factorial(int(counts.sum()))
    for count in counts:
        total //= math.factorial(int(count))
    return total


def _distinct_orderings(labels):
    counts = list(np.bincount(np.asarray(labels)))
    n = int(sum(counts))
    current = [0] * n

    def fill(position):
        if position == n:
            yield list(current)
            return
        for value, remaining in enumerate(counts):
            if remaining:
                counts[value] -= 1
                current[position] = value
                yield from fill(position + 1)
                counts[value] += 1

    yield from fill(0)


def _ratios(label_batch: np.ndarray, mass: np.ndarray, tokens: np.ndarray, domains: int) -> np.ndarray:
    """Skew ratio for each labelling in ``label_batch`` (B, N) -> (B, L·E)."""
    onehot = (label_batch[:, None, :] == np.arange(domains)[None, :, None]).astype(np.float64)  # (B, D, N)
    batch = label_batch.shape[0]
    # one GEMM (B·D, N) @ (N, L·E): a batched 3-D matmul would run B small products
    summed = (onehot.reshape(batch * domains, -1) @ mass).reshape(batch, domains, -1)   # (B, D, L·E)
    counts = onehot @ tokens                                # (B, D)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = summed / counts[:, :, None]
    means = np.nan_to_num(means, nan=0.0)
    if domains < 2:
        return np.full((label_batch.shape[0], mass.shape[1]), np.nan)
    ordered = np.sort(means, axis=1)                        # ascending over domains
    top, second = ordered[:, -1], ordered[:, -2]            # (B, L·E)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(second > 0, top / np.where(second > 0, second, 1.0), np.where(top > 0, np.inf, np.nan))


def skew_permutation_test(mass, tokens, labels, *, permutations: int = 1000, seed: int = 0,
                          min_ratio: float = 2.0) -> SkewTest:
    """``mass`` (N, L, E) summed routing probability per document, ``tokens`` (N,), ``labels`` (N,)
    domain index per document (0..D-1, every document labelled)."""
    mass = np.asarray(mass, dtype=np.float64)
    n_docs, n_layers, n_experts = mass.shape
    labels = np.asarray(labels, dtype=np.int64)
    tokens = np.asarray(tokens, dtype=np.float64)
    domains = int(labels.max()) + 1 if labels.size else 0
    flat = mass.reshape(n_docs, n_layers * n_experts)
    observed = _ratios(labels[None, :], flat, tokens, domains)[0]            # (L·E,)
    # a shuffle that reproduces the observed ratio must count, whatever the rounding of its sums
    threshold = np.where(np.isfinite(observed), observed - 1e-9 * np.abs(np.nan_to_num(observed)), observed)
    threshold = np.nan_to_num(threshold, nan=np.inf)
    exact = arrangements(labels) <= permutations
    if exact:
        batches_source = _distinct_orderings(labels)
        total = arrangements(labels)
    else:
        rng = np.random.default_rng(seed)
        batches_source = (rng.permutation(labels) for _ in range(permutations))
        total = permutations
    # shuffles per batch: the (B, D, N) one-hot and (B, D, L·E) sums stay within ~4 MB
    chunk = max(1, min(256, int(4e6 // max(1, domains * flat.shape[1] * 8 + n_docs * domains * 8))))
    at_least = np.zeros(flat.shape[1])
    passing = np.zeros(n_layers)
    done = 0
    while done < total:
        batch = []
        for labelling in batches_source:
            batch.append(labelling)
            if len(batch) == chunk:
                break
        if not batch:
            break
        ratios = _ratios(np.asarray(batch, dtype=np.int64), flat, tokens, domains)  # (B, L·E)
        ratios = np.nan_to_num(ratios, nan=-np.inf)
        at_least += (ratios >= threshold[None, :]).sum(axis=0)
        passing += (ratios >= min_ratio).reshape(len(batch), n_layers, n_experts).sum(axis=(0, 2))
        done += len(batch)
    if exact:
        p = at_least / done
    else:
        p = (1.0 + at_least) / (1.0 + done)
    p = np.where(np.isfinite(observed), p, np.nan).reshape(n_layers, n_experts)
    return SkewTest(p=p, q=benjamini_hochberg(p), expected_count=passing / max(done, 1),
                    permutations=done, exact=exact)


__all__ = ["SkewTest", "arrangements", "skew_permutation_test"]
