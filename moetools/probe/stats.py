"""Bounded-memory statistics of h per (layer, unit): streaming sums for the mean differences,
reservoir samples for the regression (memory independent of corpus length)."""

from __future__ import annotations

import numpy as np


class Reservoir:
    """Uniform sample (Algorithm R) of up to ``capacity`` rows per unit: h (I,) fp32 + labels (C,) bool."""

    def __init__(self, units: int, capacity: int, width: int, concepts: int, rng: np.random.Generator):
        self.capacity = capacity
        self.rng = rng
        self.hidden = np.zeros((units, capacity, width), dtype=np.float32)  # (E, R, I)
        self.labels = np.zeros((units, capacity, concepts), dtype=bool)  # (E, R, C)
        self.seen = np.zeros(units, dtype=np.int64)

    def add(self, unit: int, hidden: np.ndarray, labels: np.ndarray) -> None:
        """Offer rows (m, I) / (m, C) to ``unit``'s sample."""
        count = hidden.shape[0]
        position = self.seen[unit] + np.arange(count)  # 0-based stream position of each row
        slot = position.copy()
        late = position >= self.capacity
        if late.any():
            slot[late] = self.rng.integers(0, position[late] + 1)
        keep = slot < self.capacity
        self.hidden[unit, slot[keep]] = hidden[keep]
        self.labels[unit, slot[keep]] = labels[keep]
        self.seen[unit] += count

    def rows(self, unit: int) -> tuple[np.ndarray, np.ndarray]:
        filled = int(min(self.seen[unit], self.capacity))
        return self.hidden[unit, :filled], self.labels[unit, :filled]


class LayerStats:
    """Everything kept for one layer: E units (experts, or 1 for a dense layer) of width I, C concepts."""

    def __init__(self, units: int, width: int, concepts: int, capacity: int, test_capacity: int, seed: int):
        self.units, self.width, self.concepts = units, width, concepts
        self.total_sum = np.zeros((units, width))  # (E, I) fp64: Σ h over training tokens routed to e
        self.positive_sum = np.zeros((units, concepts, width))  # (E, C, I) fp64: Σ h over training positives
        self.count = np.zeros((2, units), dtype=np.int64)  # [train, test] tokens routed to e
        self.positives = np.zeros((2, units, concepts), dtype=np.int64)  # [train, test] positives per concept
        rng = np.random.default_rng(seed)
        self.train = Reservoir(units, capacity, width, concepts, rng)
        self.test = Reservoir(units, test_capacity, width, concepts, rng)

    def add(self, unit_ids: np.ndarray, hidden: np.ndarray, labels: np.ndarray, is_test: np.ndarray) -> None:
        """unit_ids (S,), hidden (S, I), labels (S, C) bool, is_test (S,) bool: one row per (token, slot)."""
        for unit in np.unique(unit_ids):
            for split, reservoir in ((0, self.train), (1, self.test)):
                chosen = (unit_ids == unit) & (is_test == bool(split))
                if not chosen.any():
                    continue
                rows, marks = hidden[chosen], labels[chosen]
                self.count[split, unit] += rows.shape[0]
                self.positives[split, unit] += marks.sum(axis=0)
                if split == 0:
                    self.total_sum[unit] += rows.sum(axis=0, dtype=np.float64)
                    self.positive_sum[unit] += marks.T.astype(np.float64) @ rows  # (C, I)
                reservoir.add(int(unit), rows, marks)

    def mean_difference(self, unit: int, concept: int) -> np.ndarray:
        """a_j = |E[h_j | y=1] − E[h_j | y=0]| over the training tokens routed to ``unit`` (paper 002), (I,)."""
        positives = self.positives[0, unit, concept]
        negatives = self.count[0, unit] - positives
        positive_sum = self.positive_sum[unit, concept]
        return np.abs(positive_sum / positives - (self.total_sum[unit] - positive_sum) / negatives)
