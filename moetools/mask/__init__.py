"""moe-mask: remove experts from a model, in memory or as a directory any evaluator loads.

- :func:`masked` — context manager, masking in memory (:mod:`moetools.mask.memory`).
- :func:`mask_directory` — write a masked model directory (:mod:`moetools.mask.directory`).
- :func:`plan_mask` — the checks and the output mode (:mod:`moetools.mask.plan`).

Semantics and the directory's provenance record: formats/mask.md.
"""

from .directory import MASK_VERSION, mask_directory, read_mask_record
from .memory import expert_dict, masked
from .plan import MaskPlan, plan_mask

__all__ = ["MASK_VERSION", "MaskPlan", "expert_dict", "mask_directory", "masked", "plan_mask",
           "read_mask_record"]
