"""moe-sample's options and their defaults (papers 000 §3.1 and 002; see moetools.sample.sampler)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

RANK_FIELDS = {"contribution": "contribution", "gate": "gates"}
HARD_NEGATIVES = ("none", "domain", "token")
SET_NAMES = ("top", "weighted", "negative", "holdout_positive", "holdout_negative")
#: entries of the dense (layer rows, tokens, experts) arrays built at once; more layers are done in chunks
DENSE_BUDGET = 8 << 20


def domain_key(domain):
    """A domain as a dict key: plain values as they are, anything else (a list, a map) by its text."""
    return domain if isinstance(domain, (str, int, float, bool, type(None))) else str(domain)


@dataclass(frozen=True)
class SampleOptions:
    """moe-sample's knobs; defaults from papers 000/002 (the table in moetools.sample.sampler)."""

    top: int = 20
    weighted: int = 20
    negatives: int = 20
    holdout_positive: int = 10
    holdout_negative: int = 10
    rank: str = "contribution"
    context: int = 32
    seed: int = 0
    holdout_fraction: float = 0.2
    split_region: int = 256
    negative_span: int = 1
    hard_negatives: str = "none"
    layers: tuple[int, ...] | None = None
    experts: tuple[int, ...] | None = None
    domain: str | None = None
    min_count: int = 0

    def check(self) -> None:
        for name in ("top", "weighted", "negatives", "holdout_positive", "holdout_negative", "min_count"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0")
        if self.rank not in RANK_FIELDS:
            raise UsageError(f"--rank must be one of {', '.join(RANK_FIELDS)}")
        if self.context < 1:
            raise UsageError("--context must be >= 1 token")
        if not 0.0 <= self.holdout_fraction <= 1.0:
            raise UsageError("--holdout-fraction must be within [0, 1]")
        if self.split_region < 0 or (self.split_region and self.split_region % self.context):
            raise UsageError(f"--split-region must be 0 (whole documents) or a multiple of --context "
                             f"({self.context}), got {self.split_region}")
        if self.negative_span < 1:
            raise UsageError("--negative-span must be >= 1")
        if self.hard_negatives not in HARD_NEGATIVES:
            raise UsageError(f"--hard-negatives must be one of {', '.join(HARD_NEGATIVES)}")

    def wanted(self) -> dict:
        return {"top": self.top, "weighted": self.weighted, "negative": self.negatives,
                "holdout_positive": self.holdout_positive, "holdout_negative": self.holdout_negative}


