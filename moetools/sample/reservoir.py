"""Bounded selection structures and content-keyed randomness for moe-sample.

Everything random in moe-sample is a pure function of *content*: a uniform
number is ``hash(seed, doc_id, position, layer, expert, purpose)``, never the
next draw of a generator. A context's fate therefore does not depend on the
order in which records arrive, so concatenated shards give the same samples in
any order, and a rerun with the same seed gives byte-identical output.

Selection is "keep the ``capacity`` largest keys" in every case:

* top-N by activation (paper 002: rank sequences by ``max_x g_i(x)·‖E_i(x)‖₂``;
  paper 000 §3.1, "top-activated samples"): key = activation;
* weighted sampling without replacement, probability ∝ weight (paper 000 §3.1,
  "importance-weighted samples"): Efraimidis & Spirakis' A-Res, key
  ``u^(1/w)``, here as ``log(u) / w`` (same order, no underflow). Keeping the
  ``capacity`` largest keys of a stream is exactly A-Res; A-ExpJ is the same
  sample with fewer random draws, and the vectorised threshold test in
  :class:`HeapBank` gets the same saving (only keys above the current
  threshold reach Python);
* uniform sampling: A-Res with equal weights (key = ``u``).

Ties are broken by a second content hash, so even equal keys order the same way
in every run.
"""

from __future__ import annotations

import hashlib
import heapq

import numpy as np

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

#: purposes, mixed into the hash so the split, the weighted and the negative draws are independent
PURPOSE_SPLIT, PURPOSE_WEIGHTED, PURPOSE_NEGATIVE, PURPOSE_MARK = 1, 2, 3, 4


def document_key(seed: int, doc_id: str) -> int:
    """A 64-bit key of (seed, document id): the root of every hash about that document."""
    digest = hashlib.blake2b(f"{int(seed)}\x00{doc_id}".encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _splitmix(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise on uint64 arrays (wrapping arithmetic)."""
    z = values + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def content_hash(root: int, *parts) -> np.ndarray:
    """uint64 hash of ``root`` and integer ``parts`` (scalars or broadcastable arrays)."""
    with np.errstate(over="ignore"):
        state = np.asarray(np.uint64(root & _MASK64))
        for part in parts:
            state = _splitmix(state ^ np.asarray(part).astype(np.uint64))
        return np.asarray(state)


def to_uniform(hashes: np.ndarray) -> np.ndarray:
    """uint64 hashes -> float64 uniforms in the open interval (0, 1)."""
    return ((hashes >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def weighted_log_key(uniform: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """A-Res key ``log(u^(1/w)) = log(u)/w``; -inf where the weight is not positive (never drawn)."""
    weight = np.asarray(weight, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        keys = np.log(uniform) / weight
    return np.where(weight > 0, keys, -np.inf)


class HeapBank:
    """One bounded min-heap per (row, expert) keeping the ``capacity`` largest ``(key, tie)`` items.

    ``threshold`` (rows, experts) holds each heap's smallest key once it is full
    (-inf before): a vectorised ``keys >= threshold`` test finds the only
    candidates that can enter, so after warm-up almost nothing reaches Python.
    Memory: rows x experts x capacity items, whatever the stream length.
    """

    def __init__(self, rows: int, experts: int, capacity: int):
        self.capacity = max(0, int(capacity))
        self.experts = experts
        self.heaps: list[list] = [[] for _ in range(rows * experts)]
        self.threshold = np.full((rows, experts), -np.inf if self.capacity else np.inf)
        self._serial = 0  # breaks exact (key, tie) ties without ever comparing payloads

    def admits(self, row: int, expert: int, key: float, tie: int) -> bool:
        """Whether ``(key, tie)`` would enter the heap of (row, expert) now."""
        heap = self.heaps[row * self.experts + expert]
        return len(heap) < self.capacity or (key, tie) > heap[0][:2]

    def push(self, row: int, expert: int, key: float, tie: int, payload) -> None:
        """Insert (call only after :meth:`admits` said yes)."""
        heap = self.heaps[row * self.experts + expert]
        self._serial += 1
        item = (key, tie, self._serial, payload)
        if len(heap) < self.capacity:
            heapq.heappush(heap, item)
        else:
            heapq.heapreplace(heap, item)
        if len(heap) >= self.capacity:
            self.threshold[row, expert] = heap[0][0]

    def items(self, row: int, expert: int) -> list[tuple]:
        """(key, tie, serial, payload) items of one heap, largest key first."""
        return sorted(self.heaps[row * self.experts + expert], key=lambda item: item[:2], reverse=True)


def top_keys(keys: np.ndarray, ties: np.ndarray, capacity: int) -> list[int]:
    """Indices of the ``capacity`` largest ``(key, tie)`` pairs, largest first (a reference for tests)."""
    order = sorted(range(len(keys)), key=lambda i: (float(keys[i]), int(ties[i])), reverse=True)
    return [i for i in order[:capacity] if np.isfinite(keys[i])]
