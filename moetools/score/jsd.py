"""Routing and functional specialisation of experts over clusters of the unembedding (paper 002).

Paper 002 ("The Expert Strikes Back") clusters the vocabulary by its unembedding vectors and asks
whether an expert's tokens concentrate on a few clusters:

1. **Clusters**: spherical k-means (k from 10 to 5,000) of the unembedding rows W_U[v], mean-centred
   and normalised to unit length (:func:`spherical_kmeans`); each token id v gets a cluster c(v).
2. **Routing specialisation**: for expert i of layer l, P_i = the distribution of c(x_t) over the
   tokens x_t routed to i; **functional specialisation**: the same over the expert's logit-lens
   tokens (the top-J ids of W_U·norm(E_i(x_t)), ``moe-trace --logit-lens J``).
3. JSD(P_i ‖ P_l) in bits against the layer's pooled distribution P_l = Σ_i counts_i / Σ counts,
   JSD(P‖Q) = ½ KL(P‖M) + ½ KL(Q‖M), M = ½ (P + Q), log base 2 (0 ≤ JSD ≤ 1).
4. **Random-expert baseline**: an expert with the same number of tokens drawn from P_l
   (multinomial, ``draws`` = 10 draws, seeded); the mean JSD of the draws. Specialisation is the
   excess of the observed JSD over this baseline (a small expert has a large JSD by chance alone).

Memory: counts L × E × k × 8 bytes (int64) per kind, bounded by the caller.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import FormatError, UsageError

UNEMBEDDING_NAMES = ("lm_head.weight", "model.embed_tokens.weight", "embed_tokens.weight", "transformer.wte.weight",
                     "model.embed.weight")


def check_model_of_trace(model_dir, header: dict) -> None:
    """Refuse (exit 2) a ``--model`` directory that is not the model the trace was made with: its
    identity (formats/README.md fingerprint: config, tokenizer, weight sample) must equal the trace
    header's. Loaded structure-only through the one loader, which also refuses weights that do not
    belong to the directory's config. Another model's unembedding would cluster another vocabulary
    and give a plausible, wrong JSD."""
    from ..errors import ModelMismatchError
    from ..models import model_identity
    from ..models.loader import load_model

    traced = header.get("model") or {}
    loaded = load_model(model_dir, device_map="meta", tokenizer=False)
    mine = model_identity(loaded.model, loaded.adapter, path=model_dir)["fingerprint"]
    theirs = traced.get("fingerprint")
    if theirs is None:
        raise ModelMismatchError(f"--model {model_dir}: the trace names no model fingerprint, so its model "
                                 "cannot be checked; trace with moe-trace to score JSD")
    if mine != theirs:
        raise ModelMismatchError(f"--model {model_dir} is not the traced model: the trace was made with "
                                 f"{traced.get('name')!r} ({theirs}), the directory holds {mine}")


def load_unembedding(model_dir) -> np.ndarray:
    """W_U (V, d) float32 from a model directory's safetensors, reading only that tensor: ``lm_head.weight``,
    or the input embedding when the model ties them (``tie_word_embeddings``) or has no separate head."""
    from safetensors import safe_open

    directory = Path(model_dir)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise UsageError(f"--model {model_dir}: no *.safetensors file (the unembedding is read from safetensors)")
    config = {}
    if (directory / "config.json").is_file():
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    names = UNEMBEDDING_NAMES[1:] if config.get("tie_word_embeddings") else UNEMBEDDING_NAMES
    for name in names:
        for path in files:
            with safe_open(str(path), framework="pt") as handle:
                if name in handle.keys():  # noqa: SIM118 - safe_open has keys(), not __contains__
                    return handle.get_tensor(name).float().numpy()
    raise UsageError(f"--model {model_dir}: none of {', '.join(names)} in its safetensors files")


def spherical_kmeans(vectors: np.ndarray, k: int, *, seed: int = 0, iterations: int = 25,
                     chunk: int = 8192, stats: dict | None = None) -> np.ndarray:
    """Cluster index (V,) of each row: rows mean-centred and L2-normalised, centroids unit vectors,
    assignment by the largest cosine; empty clusters re-seeded with the rows farthest from their
    centroid. Stops when no assignment changes or after ``iterations``. float32 throughout;
    the (chunk, k) similarity block bounds memory."""
    x = np.asarray(vectors, dtype=np.float32)
    x = x - x.mean(axis=0, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = x.shape[0]
    k = int(min(max(k, 1), n))
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(n, size=k, replace=False)].copy()          # (k, d)
    labels = np.full(n, -1, dtype=np.int64)
    best = np.empty(n, dtype=np.float32)
    for step in range(iterations):
        if stats is not None:
            stats["iterations"] = step + 1
        new = np.empty(n, dtype=np.int64)
        for start in range(0, n, chunk):
            sims = x[start:start + chunk] @ centroids.T                  # (chunk, k)
            new[start:start + chunk] = sims.argmax(axis=1)
            best[start:start + chunk] = sims.max(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=k)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        sums = np.zeros_like(centroids)
        present = counts > 0
        sums[present] = np.add.reduceat(x[order], starts[present], axis=0)
        empty = np.flatnonzero(~present)
        if empty.size:                                                   # re-seed: the worst-fitting rows
            far = np.argsort(best)[:empty.size]
            sums[empty] = x[far]
            labels[far] = empty
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return labels


def jsd_bits(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """JSD over the last axis, in bits; rows of zeros give NaN."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    ps, qs = p.sum(-1, keepdims=True), q.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p, q = p / ps, q / qs
        m = 0.5 * (p + q)
        kl_p = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1) / np.where(m > 0, m, 1)), 0).sum(-1)
        kl_q = np.where(q > 0, q * np.log2(np.where(q > 0, q, 1) / np.where(m > 0, m, 1)), 0).sum(-1)
    out = 0.5 * (kl_p + kl_q)
    return np.where((ps[..., 0] > 0) & (qs[..., 0] > 0), out, np.nan)


class ClusterCounts:
    """Per (layer, expert) counts of token clusters: routed tokens and (optionally) logit-lens tokens."""

    def __init__(self, labels: np.ndarray, layers: int, num_experts: int, *, functional: bool, max_bytes: int):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.k = int(self.labels.max()) + 1
        self.shape = (layers, num_experts, self.k)
        need = int(np.prod(self.shape)) * 8 * (2 if functional else 1)
        if need > max_bytes:
            raise UsageError(f"JSD cluster counts need {need >> 20} MiB (layers x experts x k x 8 bytes): lower "
                             f"--clusters or raise --document-memory")
        self.routing = np.zeros(int(np.prod(self.shape)), dtype=np.int64)
        self.functional = np.zeros_like(self.routing) if functional else None
        self._base = ((np.arange(layers)[:, None] * num_experts) * self.k)[:, :, None]  # (L, 1, 1)
        self.unknown_tokens = 0

    def _cluster(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(ids, dtype=np.int64)
        ok = (ids >= 0) & (ids < self.labels.size)
        return np.where(ok, self.labels[np.clip(ids, 0, self.labels.size - 1)], 0), ok

    def add(self, record: dict, num_experts: int) -> None:
        experts = record["experts"].astype(np.int64)                        # (L, T, K)
        clusters, known = self._cluster(record["tokens"])                   # (T,)
        self.unknown_tokens += int((~known).sum())
        valid = (experts < num_experts) & known[None, :, None]
        flat = (self._base + experts * self.k + clusters[None, :, None])[valid]
        self.routing += np.bincount(flat, minlength=self.routing.size)
        if self.functional is not None:
            lens = record.get("logit_lens")
            if lens is None:
                raise FormatError(f"sequence {record.get('doc_id')!r} has no logit_lens")
            lens_clusters, lens_known = self._cluster(lens)                 # (L, T, K, J)
            ok = lens_known & (experts < num_experts)[..., None]
            flat = (self._base[..., None] + experts[..., None] * self.k + lens_clusters)[ok]
            self.functional += np.bincount(flat, minlength=self.functional.size)

    def jsd(self, which: str, *, draws: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(observed JSD (L, E), random-expert baseline (L, E)) in bits."""
        counts = (self.routing if which == "routing" else self.functional).reshape(self.shape)
        pooled = counts.sum(axis=1, keepdims=True)                           # (L, 1, k)
        observed = jsd_bits(counts, np.broadcast_to(pooled, counts.shape))
        rng = np.random.default_rng(seed)
        baseline = np.full(self.shape[:2], np.nan)
        totals = counts.sum(axis=2)
        for layer in range(self.shape[0]):
            p = pooled[layer, 0] / max(pooled[layer, 0].sum(), 1)
            for expert in np.flatnonzero(totals[layer]):
                sample = rng.multinomial(int(totals[layer, expert]), p, size=draws)   # (draws, k)
                baseline[layer, expert] = float(np.mean(jsd_bits(sample, np.broadcast_to(p, sample.shape))))
        return observed, baseline


__all__ = ["ClusterCounts", "jsd_bits", "load_unembedding", "spherical_kmeans"]
