"""The four architectures of monet-train and how the baselines are sized.

``monet-vd`` / ``monet-hd``: :class:`MonetForCausalLM` with ``moe_decompose`` vertical / horizontal.

``llama`` (dense baseline, transformers ``LlamaForCausalLM``) and ``moe`` (standard top-k MoE,
transformers ``OlmoeForCausalLM``) share MONET's attention, embeddings, width, depth and
vocabulary; only the MLP differs. **Matching rule**: the reorganised MONET forward (eq. 12,
eq. 22-29) evaluates every bottom/top expert piece U_i, V_j for every token (dense routing,
eq. 9), so the parameters a MONET token touches per layer are all its expert parameters,
P = moe_experts * (2 * moe_dim * d + moe_dim + d) (Appendix A.2; routers excluded). The dense
baseline gets a SwiGLU MLP of ``intermediate_size = round(P / (3 d))`` (3 d I parameters),
i.e. the same active (= total) MLP parameters; the MoE baseline gets ``num_experts`` SwiGLU
experts (default 8) of which ``num_experts_per_tok`` (default 2) are active, each of
``intermediate_size = round(P / (3 d k))``, so its *active* expert parameters equal P.
Both sizes are rounded to a multiple of 8 (at most 4 units off, under 3% at the default
shape): transformers' fused ``grouped_mm`` experts need 16-byte aligned strides, and
aligned matrices are faster everywhere. Any key given in ``--config`` overrides these defaults.
"""

from __future__ import annotations

from ..errors import UsageError

ARCHS = ("monet-vd", "monet-hd", "llama", "moe")

#: defaults of the shared shape and of MONET's MoE keys (a small model that trains on 2 CPU cores)
DEFAULTS = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "max_position_embeddings": 2048,
            "moe_dim": 8, "moe_heads": 4, "moe_experts": 64, "moe_topk": 4, "moe_groups": 4}
SHARED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "max_position_embeddings", "rms_norm_eps", "initializer_range", "tie_word_embeddings",
               "rope_parameters", "attention_bias", "attention_dropout", "head_dim")
MONET_KEYS = ("moe_dim", "moe_heads", "moe_experts", "moe_topk", "moe_groups", "router_aux_loss_coef", "hidden_act")
#: MONET keys that only size MONET (and the matched baselines); the others mean the same in the baselines'
#: configs and pass through: ``hidden_act`` (both), ``router_aux_loss_coef`` (the MoE's load-balancing weight)
MONET_ONLY_KEYS = ("moe_dim", "moe_heads", "moe_experts", "moe_topk", "moe_groups")


def monet_expert_parameters(hidden_size: int, moe_experts: int, moe_dim: int) -> int:
    """Expert parameters of one MONET layer (Appendix A.2): E * (2 m d + m + d), for VD and HD alike."""
    return moe_experts * (2 * moe_dim * hidden_size + moe_dim + hidden_size)


def aligned_size(value: float, multiple: int = 8) -> int:
    """``value`` rounded to the nearest positive multiple of ``multiple`` (fused kernels need aligned strides)."""
    return max(multiple, multiple * round(value / multiple))


def resolve_model_config(arch: str, settings: dict, vocab_size: int, special_ids: dict) -> dict:
    """Keyword arguments of the arch's config class from defaults, ``--config`` and flags (``settings``)."""
    if arch not in ARCHS:
        raise UsageError(f"unknown --arch {arch!r}: choose one of {', '.join(ARCHS)}")
    values = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    values["vocab_size"] = vocab_size
    values.update(special_ids)
    d, experts, moe_dim, topk = (values["hidden_size"], values["moe_experts"], values["moe_dim"], values["moe_topk"])
    if d % values["num_attention_heads"]:
        raise UsageError(f"--d-model {d} is not a multiple of --heads {values['num_attention_heads']}")
    if not 1 <= topk <= experts:
        raise UsageError(f"--moe-topk {topk} must be between 1 and --moe-experts {experts}")
    if arch == "monet-vd" and (d % 2 or moe_dim % 2):
        raise UsageError(f"monet-vd splits the hidden size and moe_dim in halves: both must be even "
                         f"(--d-model {d}, moe_dim {moe_dim})")
    expert_parameters = monet_expert_parameters(d, experts, moe_dim)
    if arch.startswith("monet"):
        keep = set(SHARED_KEYS) | set(MONET_KEYS) | {"pad_token_id", "bos_token_id", "eos_token_id",
                                                   "moe_decompose", "output_router_probs"}
        config = {k: v for k, v in values.items() if k in keep}
        config["moe_decompose"] = "vertical" if arch == "monet-vd" else "horizontal"
        return config
    if arch == "llama" and "router_aux_loss_coef" in values:
        raise UsageError("router_aux_loss_coef is a load-balancing loss weight: --arch llama has no router "
                         "(use --arch moe or a MONET arch)")
    extra = {k: v for k, v in values.items() if k not in DEFAULTS and k not in MONET_ONLY_KEYS}
    config = {k: values[k] for k in values if k in SHARED_KEYS or k in ("pad_token_id", "bos_token_id", "eos_token_id")}
    config.update({k: v for k, v in extra.items() if k not in config})
    if arch == "llama":
        config.setdefault("intermediate_size", aligned_size(expert_parameters / (3 * d)))
    else:
        config.setdefault("num_experts", 8)
        config.setdefault("num_experts_per_tok", 2)
        if config["num_experts_per_tok"] > config["num_experts"]:
            raise UsageError("num_experts_per_tok must not exceed num_experts")
        config.setdefault("intermediate_size",
                          aligned_size(expert_parameters / (3 * d * config["num_experts_per_tok"])))
        config.setdefault("output_router_logits", True)  # so the load-balancing loss trains the router
    return config


def build_model(arch: str, config_kwargs: dict):
    """A freshly initialised transformers causal LM for ``arch``."""
    if arch.startswith("monet"):
        from types import SimpleNamespace

        from ..models.monet.configuration_monet import MonetConfig, monet_config_problems
        from ..models.monet.modeling_monet import MonetForCausalLM

        # check with our messages (exit 2) before transformers' validation would raise its own
        config = SimpleNamespace(**{"moe_decompose": "vertical", "moe_topk": 32, "moe_experts": 512,
                                    "moe_heads": 8, "moe_dim": 8, "moe_groups": 4, "hidden_size": 4096,
                                    **config_kwargs})
        problems = monet_config_problems(config)
        if problems:
            raise UsageError("; ".join(problems))
        return MonetForCausalLM(MonetConfig(**config_kwargs))
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        return LlamaForCausalLM(LlamaConfig(**config_kwargs))
    from transformers import OlmoeConfig, OlmoeForCausalLM

    return OlmoeForCausalLM(OlmoeConfig(**config_kwargs))


def parameter_counts(model, arch: str) -> dict:
    """Total parameters, and the active ones per token (MoE: only the chosen experts count)."""
    total = sum(p.numel() for p in model.parameters())
    counts = {"total": total, "active": total}
    if arch == "moe":
        config = model.config
        expert = sum(p.numel() for name, p in model.named_parameters() if ".mlp.experts." in name)
        counts["active"] = total - expert + expert * config.num_experts_per_tok // config.num_experts
    return counts


__all__ = ["ARCHS", "DEFAULTS", "build_model", "monet_expert_parameters", "parameter_counts", "resolve_model_config"]
