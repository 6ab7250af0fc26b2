"""Deterministic, order-free choices of the corpus builder: splits and selection order.

Both come from SHA-256 of a salted identifier, so they are the same on every
machine, Python version and run, and do not depend on the order in which files
are listed. Splits and selection use different salts: with one salt the
documents kept under a token cap would all fall in the same split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.9, 0.05, 0.05)
SPLIT_SALT = "moetools-split-v1:"
SELECTION_SALT = "moetools-select-v1:"
ORDER_SALT = "moetools-order-v1:"


def unit_interval(key: str, salt: str) -> float:
    """A number in [0, 1) from the first 64 bits of sha256(salt + key)."""
    digest = hashlib.sha256((salt + key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def check_fractions(fractions: Iterable[float]) -> tuple[float, float, float]:
    values = tuple(float(value) for value in fractions)
    if len(values) != len(SPLITS) or any(value < 0 for value in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {values}")
    return values  # type: ignore[return-value]


def split_of(document_id: str, fractions: Iterable[float] = DEFAULT_FRACTIONS) -> str:
    """The split of a corpus record: ``train`` / ``validation`` / ``test`` by the hash of its id.

    u = sha256("moetools-split-v1:" + id)[:8] / 2**64 (first 8 bytes, big-endian);
    train if u < f_train, validation if u < f_train + f_validation, else test.
    """
    train, validation, _ = check_fractions(fractions)
    position = unit_interval(document_id, SPLIT_SALT)
    if position < train:
        return "train"
    if position < train + validation:
        return "validation"
    return "test"


def hash_order(keys: Iterable[str], salt: str = SELECTION_SALT) -> list[str]:
    """``keys`` sorted by their salted hash (ties, impossible in practice, by key)."""
    return sorted(keys, key=lambda key: (unit_interval(key, salt), key))
