"""What a mask does to one model: the per-layer sets, their checks, and how a directory expresses it.

:func:`plan_mask` checks an expert set against a loaded model (exit 2 on a set scored on another
model, ids out of range, a layer left with fewer than top-k experts, or a group-limited router that
could then be forced to pick a masked expert) and chooses the output *mode* (formats/mask.md):

- ``pruned``: a standard checkpoint with the masked experts' weights and router rows (and biases,
  score-correction biases) removed and the family's expert-count key updated. Exact when every MoE
  layer keeps the same number of experts (one count in the config) and, for group-limited routers,
  every group of a layer loses the same number (groups stay contiguous and equal).
- ``bias``: a standard checkpoint with every expert kept and the masked experts' router bias (GPT-OSS
  ``router.bias``) or choice score bias (DeepSeek-V3 ``e_score_correction_bias``, ERNIE ``moe_statics``)
  set to −∞: never chosen, and the other gates exactly those of the mask. Used when layers keep
  different numbers of experts and the routing rule has such a bias (:func:`exact_biases`).
- ``remote``: everything else (OLMoE, Mixtral, Qwen, DeepSeek-V2 with unequal per-layer sets; MONET):
  the weights unchanged plus the smallest custom code (``auto_map``) that applies the mask at routing
  level; loads with ``trust_remote_code=True`` and refuses to load without it.

Everything about the family comes from its adapter (the routing rule, :meth:`Adapter.mask_routing`,
:meth:`Adapter.expert_count_keys`): the plan knows no family by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError
from ..models.shared_routers import expand_to_groups, router_groups
from .routing import routing_problem, submodule


def exact_biases(adapter) -> tuple[str, ...]:
    """Router tensors whose −∞ removes an expert exactly (``bias`` mode), as the last two parts of their
    names (a checkpoint may store them under another parent: ERNIE's ``mlp.moe_statics.…``).

    A router bias, under softmax scoring: the logit is −∞, the expert leaves the softmax. A choice
    score bias: the expert is never chosen; its gate would still count in a softmax's denominator,
    so only when the gates are sigmoid scores or renormalised over the chosen.
    """
    rule = adapter.routing_rule()
    paths = []
    if rule.router_bias and rule.scoring == "softmax":
        paths.append(f"{adapter.router_attribute}.bias")
    if rule.score_bias and (rule.scoring == "sigmoid" or rule.renormalize):
        paths.append(f"{adapter.router_attribute}.{adapter.score_bias_attribute}")
    return tuple(".".join(path.split(".")[-2:]) for path in paths)


@dataclass
class MaskPlan:
    model_type: str
    num_experts: int  # per MoE layer, before masking
    top_k: int
    masked: dict[int, list[int]]  # decoder layer -> masked original ids (sorted); every MoE layer present
    mode: str = "pruned"
    groups: int = 1  # expert groups of a group-limited router (1: none)
    notes: list[str] = field(default_factory=list)
    shared_note: str = ""  # set when the set touches a router shared by several layers
    routing: dict = field(default_factory=dict)  # Adapter.mask_routing(): the record's ``routing``
    expert_count_keys: tuple[str, ...] = ()  # config keys of the expert count (pruned mode)
    bias_tensors: tuple[str, ...] = ()  # router tensors set to −∞ in bias mode (exact_biases)

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
                "top_k": self.top_k, "routing": self.routing, "layers": layers}


def _check_routing(adapter, routing: dict) -> None:
    """UsageError when the masked routing cannot be computed for this adapter's layers."""
    problem = routing_problem(routing)
    if problem is None:
        try:
            block = submodule(adapter.decoder_layers()[adapter.moe_layers()[0].index], routing["block"])
            if routing["scoring"] != "product_key":
                router = submodule(block, routing["router"])
                if routing["score_bias"]:
                    submodule(router, routing["score_bias"])
                if not hasattr(router, "top_k"):
                    problem = "its router has no top_k attribute"
        except AttributeError as error:
            problem = f"its modules are not where the adapter says ({error})"
    if problem:
        raise UsageError(f"moe-mask cannot mask model type {adapter.config.model_type!r} "
                         f"(adapter {adapter.name}): {problem}")


def _check_groups(plan: MaskPlan, layer: int, top_groups: int) -> list[int]:
    """Kept experts per group; refuse when the best groups could hold fewer than top-k unmasked experts."""
    size = plan.num_experts // plan.groups
    kept = [sum(1 for i in plan.kept(layer) if i // size == g) for g in range(plan.groups)]
    need = 2 if plan.routing["group_score"] == "top2_sum" else 1  # a group scored by its best two experts
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
    routing = adapter.mask_routing()
    _check_routing(adapter, routing)
    top_k_routed = routing["scoring"] != "product_key"  # product keys route by thresholds, not a top-k
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
    # a composed expert of a router shared by several layers (MONET moe_groups) is one routing choice:
    # masked in every layer of its group (moetools.models.shared_routers)
    masked, shared_note = expand_to_groups(masked, [g for g in router_groups(model, adapter) if len(g) > 1])
    plan = MaskPlan(model_type=model_type, num_experts=num_experts, top_k=top_k, masked=masked,
                    shared_note=shared_note, routing=routing, expert_count_keys=adapter.expert_count_keys(),
                    bias_tensors=exact_biases(adapter))
    for layer, ids in masked.items():
        left = num_experts - len(ids)
        if left == 0:
            raise UsageError(f"layer {layer}: every expert is masked")
        if left < top_k:  # MONET too: its top-k composed experts per token would include masked ones
            raise UsageError(f"layer {layer}: {left} experts left, fewer than top-k = {top_k}")
    if not top_k_routed:  # composed experts: no router rows or bias to remove
        plan.mode = "remote"
        return plan
    plan.groups, top_groups = routing["groups"], routing["top_groups"]
    per_group = {layer: _check_groups(plan, layer, top_groups) for layer in masked} if plan.groups > 1 else {}
    sizes = {len(ids) for ids in masked.values()}
    equal_groups = all(len(set(counts)) == 1 for counts in per_group.values())
    if len(sizes) == 1 and equal_groups:
        plan.mode = "pruned"
    elif plan.bias_tensors:
        plan.mode = "bias"
        plan.notes.append("layers keep different numbers of experts: router bias −∞ on the masked experts")
    else:
        plan.mode = "remote"
        plan.notes.append("layers keep different numbers of experts (or groups lose different numbers): "
                          "masked at routing level by custom code in the directory (trust_remote_code=True)")
    if not any(masked.values()):
        plan.mode = "pruned"  # nothing to mask: the base model itself, with the provenance record
    return plan
