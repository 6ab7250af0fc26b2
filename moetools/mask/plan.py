"""What a mask does to one model: the per-layer sets, their checks, and how a directory expresses it.

:func:`plan_mask` checks an expert set against a loaded model (exit 2 on a set scored on another
model, ids out of range, a layer left with fewer than top-k experts, or a group-limited router that
could then be forced to pick a masked expert) and chooses the output *mode* (formats/mask.md):

- ``pruned``: a standard checkpoint with the masked experts' weights and router rows (and biases,
  score-correction biases) removed and the family's expert-count key updated. Exact when every MoE
  layer keeps the same number of experts (one count in the config) and, for group-limited routers,
  every group of a layer loses the same number (groups stay contiguous and equal).
- ``bias``: a standard checkpoint with every expert kept and the masked experts' router bias (GPT-OSS
  ``router.bias``), score-correction bias (DeepSeek-V3 ``e_score_correction_bias``) or ERNIE
  ``moe_statics`` bias set to −∞: never chosen, and (softmax families) gates renormalised over the
  chosen, so exact. Used when layers keep different numbers of experts and the family has such a bias.
- ``remote``: everything else (OLMoE, Mixtral, Qwen, DeepSeek-V2 with unequal per-layer sets; MONET):
  the weights unchanged plus the smallest custom code (``auto_map``) that applies the mask at routing
  level; loads with ``trust_remote_code=True`` and refuses to load without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError
from .routing import KINDS

#: the config key holding the routed-expert count, per model type
EXPERT_COUNT_KEY = {"olmoe": "num_experts", "mixtral": "num_local_experts", "qwen2_moe": "num_experts",
                    "qwen3_moe": "num_experts", "deepseek_v2": "n_routed_experts",
                    "deepseek_v3": "n_routed_experts", "ernie4_5_moe": "moe_num_experts",
                    "gpt_oss": "num_local_experts"}
#: families whose router carries a per-expert bias that a −∞ removes from the choice exactly
BIAS_FAMILIES = ("gpt_oss", "deepseek_v3", "ernie4_5_moe")


@dataclass
class MaskPlan:
    model_type: str
    num_experts: int  # per MoE layer, before masking
    top_k: int
    masked: dict[int, list[int]]  # decoder layer -> masked original ids (sorted); every MoE layer present
    mode: str = "pruned"
    groups: int = 1  # expert groups of a group-limited router (1: none)
    notes: list[str] = field(default_factory=list)

    def kept(self, layer: int) -> list[int]:
        gone = set(self.masked[layer])
        return [i for i in range(self.num_experts) if i not in gone]

    def id_map(self, layer: int) -> dict[int, int]:
        """original id -> id in the output directory (identity unless pruned)."""
        if self.mode != "pruned":
            return {i: i for i in self.kept(layer)}
        return {old: new for new, old in enumerate(self.kept(layer))}

    def record(self) -> dict:
        """The ``moe_mask`` block's per-layer part (formats/mask.md)."""
        layers = {}
        for layer in sorted(self.masked):
            layers[str(layer)] = {"masked": self.masked[layer], "kept": self.kept(layer),
                                  "map": {str(k): v for k, v in self.id_map(layer).items()}}
        return {"mode": self.mode, "family": self.model_type, "num_experts": self.num_experts,
                "top_k": self.top_k, "layers": layers}


def _group_settings(model) -> tuple[int, int]:
    """(groups, groups chosen per token) of a group-limited router, (1, 1) otherwise."""
    config = model.config
    if config.model_type == "deepseek_v2" and getattr(config, "topk_method", "greedy") != "group_limited_greedy":
        return 1, 1
    if config.model_type in ("deepseek_v2", "deepseek_v3"):
        return int(getattr(config, "n_group", 1) or 1), int(getattr(config, "topk_group", 1) or 1)
    return 1, 1


def _check_groups(plan: MaskPlan, layer: int, top_groups: int) -> list[int]:
    """Kept experts per group; refuse when the best groups could hold fewer than top-k unmasked experts."""
    size = plan.num_experts // plan.groups
    kept = [sum(1 for i in plan.kept(layer) if i // size == g) for g in range(plan.groups)]
    need = 2 if plan.model_type == "deepseek_v3" else 1  # V3 scores a group by its best two experts
    usable = sorted(k for k in kept if k >= need)
    if len(usable) < top_groups or sum(usable[:top_groups]) < plan.top_k:
        raise UsageError(f"layer {layer}: masking leaves experts per group {kept} (groups of {size}, "
                         f"{top_groups} chosen per token, top-{plan.top_k}): the group-limited router could "
                         f"be forced to pick a masked expert; mask fewer experts in those groups")
    return kept


def plan_mask(model, adapter, experts: dict[int, list[int]]) -> MaskPlan:
    """Check ``experts`` ({decoder layer: ids to mask}) against ``model`` and choose the output mode."""
    layers = adapter.moe_layers()
    model_type = model.config.model_type
    if model_type not in KINDS:
        raise UsageError(f"moe-mask does not know how to mask model type {model_type!r}")
    indices = {layer.index for layer in layers}
    num_experts, top_k = layers[0].num_experts, layers[0].top_k
    for layer, ids in experts.items():
        if layer not in indices:
            raise UsageError(f"experts file names layer {layer}, not a MoE layer of this model "
                             f"(MoE layers: {sorted(indices)})")
        bad = [i for i in ids if not 0 <= i < num_experts]
        if bad:
            raise UsageError(f"layer {layer}: expert ids {bad} out of range (the model has {num_experts} per layer)")
    masked = {index: sorted({int(i) for i in experts.get(index, ())}) for index in sorted(indices)}
    plan = MaskPlan(model_type=model_type, num_experts=num_experts, top_k=top_k, masked=masked)
    for layer, ids in masked.items():
        left = num_experts - len(ids)
        if left == 0:
            raise UsageError(f"layer {layer}: every expert is masked")
        if left < top_k:  # MONET too: its top-k composed experts per token would include masked ones
            raise UsageError(f"layer {layer}: {left} experts left, fewer than top-k = {top_k}")
    if model_type == "monet":
        plan.mode = "remote"
        return plan
    plan.groups, top_groups = _group_settings(model)
    per_group = {layer: _check_groups(plan, layer, top_groups) for layer in masked} if plan.groups > 1 else {}
    sizes = {len(ids) for ids in masked.values()}
    equal_groups = all(len(set(counts)) == 1 for counts in per_group.values())
    if len(sizes) == 1 and equal_groups:
        plan.mode = "pruned"
    elif model_type in BIAS_FAMILIES:
        plan.mode = "bias"
        plan.notes.append("layers keep different numbers of experts: router bias −∞ on the masked experts")
    else:
        plan.mode = "remote"
        plan.notes.append("layers keep different numbers of experts (or groups lose different numbers): "
                          "masked at routing level by custom code in the directory (trust_remote_code=True)")
    if not any(masked.values()):
        plan.mode = "pruned"  # nothing to mask: the base model itself, with the provenance record
    return plan
