"""What each moe-tune mode trains (DESIGN.md, moe-tune "Modes"), as parameter sets of a loaded model.

- ``full``: every parameter;
- ``attention-router`` (paper 003 §3, stage 1): every decoder layer's ``self_attn`` parameters and
  every MoE layer's router (MONET: ``router.w1``/``w2`` of the routing layers);
- ``experts`` / ``lora-experts``: the experts of experts.json (:mod:`.slices`), plus the shared
  experts and/or every non-expert module when the file says ``shared_experts`` /
  ``non_expert_modules`` (ESFT's flags);
- ``lora``: peft LoRA (r = 16, alpha = 32 as in paper 003) on the attention projections and the
  expert projections (fused tensors through peft's ``target_parameters``; MONET's expert Linears
  through ``target_modules``);
- ``das-two-stage``: ``attention-router`` then ``experts`` or ``lora-experts`` on the top-DAS experts.
"""

from __future__ import annotations

from torch import nn

MODES = ("full", "experts", "attention-router", "das-two-stage", "lora", "lora-experts")
STAGE2_KINDS = ("experts", "lora-experts")


def attention_router_names(model, adapter) -> list[str]:
    """Names of the attention and router parameters."""
    names = {id(p): n for n, p in model.named_parameters()}
    chosen: dict[int, str] = {}
    for layer in adapter.decoder_layers():
        attention = getattr(layer, "self_attn", None)
        if attention is not None:
            chosen.update({id(p): names[id(p)] for p in attention.parameters()})
    for layer in adapter.moe_layers():
        if layer.router is not None:
            chosen.update({id(p): names[id(p)] for p in layer.router.parameters() if id(p) in names})
    return sorted(chosen.values())


def expert_parameter_ids(adapter) -> set[int]:
    """Identities of the parameters held by experts modules (routed experts, not shared)."""
    return {id(p) for layer in adapter.moe_layers() for p in layer.experts.parameters()}


def extra_expert_mode_names(model, adapter, shared_experts: bool, non_expert_modules: bool) -> list[str]:
    """Whole parameters an ESFT-style file adds to ``experts`` mode."""
    names = {id(p): n for n, p in model.named_parameters()}
    chosen = set()
    if shared_experts:
        for layer in adapter.moe_layers():
            if layer.shared is not None:
                chosen |= {names[id(p)] for p in layer.shared.parameters()}
    if non_expert_modules:
        experts = expert_parameter_ids(adapter)
        chosen |= {n for n, p in model.named_parameters() if id(p) not in experts}
    return sorted(chosen)


def lora_targets(model, adapter) -> tuple[list[str], list[str]]:
    """(target_modules, target_parameters) for peft: attention Linears, and expert projections."""
    modules, parameters = [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and ".self_attn." in f".{name}.":
            modules.append(name)
    expert_modules = {id(layer.experts): layer for layer in adapter.moe_layers()}
    for name, module in model.named_modules():
        if id(module) not in expert_modules:
            continue
        if adapter.composed_experts:
            modules += [f"{name}.{child}" for child, sub in module.named_children() if isinstance(sub, nn.Linear)]
        else:
            layer = expert_modules[id(module)]
            parameters += [f"{name}.{p}" for p, t in module.named_parameters(recurse=False)
                           if t.ndim == 3 and t.shape[0] == layer.num_experts]
    return modules, parameters


def make_peft(model, adapter, rank: int, alpha: float):
    """``peft.get_peft_model`` with LoRA on :func:`lora_targets` (bias and everything else frozen)."""
    from peft import LoraConfig, get_peft_model

    modules, parameters = lora_targets(model, adapter)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none", target_modules=modules,
                        target_parameters=parameters or None, init_lora_weights=True)
    return get_peft_model(model, config)


__all__ = ["MODES", "STAGE2_KINDS", "attention_router_names", "extra_expert_mode_names", "lora_targets", "make_peft"]
