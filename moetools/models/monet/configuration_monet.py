"""MonetConfig: the hyperparameters of a MONET model (LLaMA keys + the MoE keys of the published release).

Keys and defaults follow the public MONET release (papers/README.md): ``moe_dim`` (expert
hidden size m), ``moe_heads`` (routing heads H), ``moe_experts`` (experts per product-key
factor, so N = moe_experts**2 composed experts), ``moe_topk`` (experts kept per head and
factor), ``moe_groups`` (routing reused across this many consecutive layers, paper B.1: 4),
``moe_decompose`` ("vertical" = VD, eq. 13-15; "horizontal" = HD, eq. 6-12) and
``hidden_act="relu2"`` (squared ReLU, paper B.1). ``router_aux_loss_coef`` is lambda of
eq. 18 (1e-3, paper B.1).
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters

DECOMPOSITIONS = ("vertical", "horizontal")


@strict
class MonetConfig(PreTrainedConfig):
    """A transformers 5 ``PreTrainedConfig`` (a dataclass) with ``model_type="monet"``.

    Example::

        MonetConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    moe_dim=8, moe_heads=2, moe_experts=16, moe_topk=4, moe_groups=1)
    """

    model_type = "monet"
    keys_to_ignore_at_inference = ["past_key_values"]  # noqa: RUF012 (transformers convention)

    # LLaMA keys (the attention, norms and embeddings are LLaMA's)
    vocab_size: int = 32000
    hidden_size: int = 4096
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "relu2"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pretraining_tp: int | None = 1
    tie_word_embeddings: bool = False
    rope_parameters: RopeParameters | dict | None = None
    attention_bias: bool = False
    attention_dropout: int | float | None = 0.0
    # the MONET MLP replaces LLaMA's; kept for config compatibility with the release, unused
    intermediate_size: int | None = None
    mlp_bias: bool | None = None
    # MONET keys
    moe_dim: int = 8
    moe_heads: int = 8
    moe_experts: int = 512
    moe_topk: int = 32
    moe_groups: int = 4
    moe_decompose: str = "vertical"
    output_router_probs: bool = False
    router_aux_loss_coef: float = 1e-3

    def __post_init__(self, **kwargs):
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Checked by transformers' ``@strict`` validation on construction and on load."""
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden size {self.hidden_size} is not a multiple of the number of attention "
                             f"heads {self.num_attention_heads}")
        problems = monet_config_problems(self)
        if problems:
            raise ValueError("; ".join(problems))


def monet_config_problems(config) -> list[str]:
    """Human-readable reasons why ``config`` cannot build a MONET model (empty when it can)."""
    problems = []
    if config.moe_decompose not in DECOMPOSITIONS:
        problems.append(f"moe_decompose must be one of {', '.join(DECOMPOSITIONS)}, not {config.moe_decompose!r}")
    if config.moe_experts < 1 or config.moe_heads < 1 or config.moe_dim < 1 or config.moe_groups < 1:
        problems.append("moe_experts, moe_heads, moe_dim and moe_groups must be at least 1")
    if not 1 <= config.moe_topk <= config.moe_experts:
        problems.append(f"moe_topk ({config.moe_topk}) must be between 1 and moe_experts ({config.moe_experts})")
    if config.moe_decompose == "vertical":
        if config.hidden_size % 2:
            problems.append(f"vertical decomposition needs an even hidden size, got {config.hidden_size}")
        if config.moe_dim % 2:
            problems.append(f"vertical decomposition needs an even moe_dim, got {config.moe_dim}")
    return problems


__all__ = ["DECOMPOSITIONS", "MonetConfig", "monet_config_problems"]
