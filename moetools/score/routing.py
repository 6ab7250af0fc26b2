"""Routing sums per domain × layer × expert, accumulated one trace record at a time.

Everything moe-score reports about routing is a ratio of sums over tokens, so one pass over the
trace keeps only these sums (float64, shape (D, L, E) each, D = domains seen):

- ``tokens[d]``            |T_d|, tokens of domain d
- ``selected[d, l, e]``    Σ_t 1[e ∈ topK_l(t)]              (AF, 000 eq. 6; ESFT token score)
- ``gate[d, l, e]``        Σ_t g_e(t), 0 where not selected    (direct routing score; ESFT gate score)
- ``prob[d, l, e]``        Σ_t p_e(t), the full router dist.   (DAS, 003 eq. 1; skew, 004 §5.1; RC)
- ``norm[d, l, e]``        Σ_{t routed} ‖E_e(x_t)‖₂ = contribution / gate   (ExpLen, 003 Table 5)
- ``contribution[d,l,e]``  Σ_t g_e(t)·‖E_e(x_t)‖₂            (EC / PSN, 003 Table 5; REAP saliency)

Per-document state is kept only when a metric needs it (skew permutation test, Pearson with a
document field): one float32 (L, E) row of mean routing probability per document, bounded by
``max_documents`` (see :class:`DocumentTable`).
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError, UsageError


class DomainSums:
    """The per-domain sums above; ``add`` takes one ``sequence`` record of a trace."""

    FIELDS = ("selected", "gate", "prob", "norm", "contribution")

    def __init__(self, layers: list[int], num_experts: int, top_k: int, domain_field: str = "domain"):
        self.layers = list(layers)
        self.num_experts = int(num_experts)
        self.top_k = int(top_k)
        self.domain_field = domain_field
        self.domains: list[str] = []
        self._index: dict[str, int] = {}
        self.tokens: list[float] = []
        self.sums: dict[str, list[np.ndarray]] = {name: [] for name in self.FIELDS}
        self.sequences = 0
        self.missing_domain_sequences = 0
        self.missing_domain_tokens = 0
        self._missing_docs: set[str] = set()
        size = len(self.layers) * self.num_experts
        self._offsets = (np.arange(len(self.layers), dtype=np.int64) * self.num_experts)[:, None, None]
        self._size = size

    @property
    def missing_domain_documents(self) -> int:
        return len(self._missing_docs)

    def domain_of(self, record: dict) -> str | None:
        meta = record.get("meta") or {}
        value = meta.get(self.domain_field) if isinstance(meta, dict) else None
        if value is None or value == "":
            return None
        return str(value)

    def _slot(self, domain: str) -> int:
        index = self._index.get(domain)
        if index is None:
            index = self._index[domain] = len(self.domains)
            self.domains.append(domain)
            self.tokens.append(0.0)
            for name in self.FIELDS:
                self.sums[name].append(np.zeros(self._size, dtype=np.float64))
        return index

    def add(self, record: dict, domain: str | None = None) -> tuple[int, np.ndarray] | None:
        """Add one sequence record under ``domain`` (default: its meta field). Returns
        (tokens, prob_sum (L, E)) so callers can keep per-document state, or None when skipped."""
        self.sequences += 1
        domain = self.domain_of(record) if domain is None else domain
        experts = record["experts"]          # (L, T, K) unsigned ints
        gates = record["gates"]              # (L, T, K) float
        contribution = record["contribution"]  # (L, T, K) float
        prob_sum = record["prob_sum"]        # (L, E) float32
        n_layers, count = experts.shape[0], experts.shape[1]
        if n_layers != len(self.layers) or prob_sum.shape != (n_layers, self.num_experts):
            raise FormatError(f"sequence {record.get('doc_id')!r}: arrays do not match the header "
                              f"({len(self.layers)} layers, {self.num_experts} experts)")
        if domain is None:
            self.missing_domain_sequences += 1
            self.missing_domain_tokens += count
            self._missing_docs.add(str(record.get("doc_id")))
            return None
        slot = self._slot(domain)
        self.tokens[slot] += count
        ids = experts.astype(np.int64, copy=False)
        valid = ids < self.num_experts                     # MONET fills empty slots with all-ones ids
        flat = (ids + self._offsets)[valid]                # (n,) index l·E + e
        g = gates.astype(np.float64)[valid]
        c = contribution.astype(np.float64)[valid]
        size = self._size
        self.sums["selected"][slot] += np.bincount(flat, minlength=size)
        self.sums["gate"][slot] += np.bincount(flat, weights=g, minlength=size)
        self.sums["contribution"][slot] += np.bincount(flat, weights=c, minlength=size)
        with np.errstate(divide="ignore", invalid="ignore"):
            norms = np.where(g > 0, c / np.where(g > 0, g, 1.0), 0.0)   # ‖E(x)‖ = (g·‖E‖)/g
        self.sums["norm"][slot] += np.bincount(flat, weights=norms, minlength=size)
        self.sums["prob"][slot] += prob_sum.astype(np.float64).reshape(-1)
        return count, prob_sum

    # -- views -------------------------------------------------------------------------------------
    def array(self, name: str) -> np.ndarray:
        """(D, L, E) float64."""
        shape = (len(self.domains), len(self.layers), self.num_experts)
        if not self.domains:
            return np.zeros(shape)
        return np.stack(self.sums[name]).reshape(shape)

    def token_counts(self) -> np.ndarray:
        return np.asarray(self.tokens, dtype=np.float64)


class DocumentTable:
    """Per-document mean routing probability (L, E) float32, its tokens, domain and target value.

    Windows of one document are summed under its ``doc_id`` (they need not be consecutive: the
    trace sorts windows by length). Memory: documents × L × E × 4 bytes (plus two float64 per
    document); ``max_bytes`` bounds it and a larger trace is refused with a usage error that says
    how to lower it (fewer --layers, or no --permutations / --target-field).
    """

    def __init__(self, layers: int, num_experts: int, max_bytes: int, target_field: str | None = None):
        self.shape = (layers, num_experts)
        self.row_bytes = layers * num_experts * 4
        self.max_bytes = max_bytes
        self.target_field = target_field
        self._rows: list[np.ndarray] = []
        self._index: dict[str, int] = {}
        self.tokens: list[int] = []
        self.domains: list[str | None] = []
        self.targets: list[float] = []
        self.without_target = 0

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def nbytes(self) -> int:
        return len(self._rows) * (self.row_bytes + 16)

    def add(self, doc_id: str, domain: str | None, count: int, prob_sum: np.ndarray, meta: dict) -> None:
        index = self._index.get(doc_id)
        if index is None:
            target = None
            if self.target_field is not None:
                target = _numeric(meta.get(self.target_field) if isinstance(meta, dict) else None)
                if target is None:
                    self.without_target += 1
            if (len(self._rows) + 1) * (self.row_bytes + 16) > self.max_bytes:
                raise UsageError(
                    f"per-document state would exceed {self.max_bytes >> 20} MiB ({len(self._rows) + 1} "
                    f"documents × {self.row_bytes} bytes): raise --document-memory, score fewer --layers, "
                    f"or drop --permutations/--target-field")
            index = self._index[doc_id] = len(self._rows)
            self._rows.append(np.zeros(self.shape, dtype=np.float32))
            self.tokens.append(0)
            self.domains.append(domain)
            self.targets.append(np.nan if target is None else target)
        self._rows[index] += prob_sum
        self.tokens[index] += count

    def mass(self) -> np.ndarray:
        """(N_docs, L, E) float64 summed routing probability per document."""
        if not self._rows:
            return np.zeros((0, *self.shape))
        return np.stack(self._rows).astype(np.float64)


def _numeric(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if np.isfinite(number) else None
    return None


__all__ = ["DocumentTable", "DomainSums"]
