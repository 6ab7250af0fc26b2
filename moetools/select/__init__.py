"""moe-select: from scores to an expert set (experts.json, ESFT's layout; formats/experts.md).

``read_experts(path, model=identity)`` is what moe-mask, moe-tune and moe-eval use to load a set.
"""

from .experts import ExpertSet, complement, intersect, minus, read_experts, union, write_experts

__all__ = ["ExpertSet", "complement", "intersect", "minus", "read_experts", "union", "write_experts"]
