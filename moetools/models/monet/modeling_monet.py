"""MONET (Mixture of Monosemantic Experts for Transformers) in PyTorch, nanoGPT-style.

One class per block: :class:`MonetRMSNorm`, :class:`MonetAttention` (rotary, LLaMA's),
:class:`MonetRouter` (product-key routing with BatchNorm thresholds), :class:`MonetVerticalExperts`
(VD, eq. 13-15 / Appendix A.1, Algorithm 2), :class:`MonetHorizontalExperts` (HD, eq. 6-12,
Algorithm 1), :class:`MonetDecoderLayer`, :class:`MonetModel`, :class:`MonetForCausalLM`.
State-dict names and shapes are those of the published release (papers/README.md).

Shapes: B batch, T query tokens, S key tokens, D hidden size, H routing heads (``moe_heads``),
E experts per factor (``moe_experts``; N = E**2 composed experts), M expert hidden size
(``moe_dim``).  No tensor of size N (nor (B, T, H, N)) is ever built: the forwards reorder the
sums so that only (B, T, E, M) and (B, T, H, M) intermediates exist (eq. 12, eq. 22-29).

Differences from the published PyTorch port: its routers are frozen (``requires_grad_(False)``,
it is an inference/fine-tuning port); here they train, as in the paper's pretraining. The
auxiliary losses (eq. 16-18) are computed in training mode and added to ``loss``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_monet import MonetConfig


@dataclass
class MonetModelOutput(ModelOutput):
    """``router_probs``: per routing layer (every ``moe_groups``-th), the pair (g1, g2), each (B, T, H, E)."""

    last_hidden_state: torch.FloatTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    router_probs: tuple[tuple[torch.FloatTensor, torch.FloatTensor], ...] | None = None
    aux_loss: torch.FloatTensor | None = None


@dataclass
class MonetCausalLMOutput(ModelOutput):
    """``loss`` = lm_loss + lambda * aux_loss (eq. 18) when labels are given."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    router_probs: tuple[tuple[torch.FloatTensor, torch.FloatTensor], ...] | None = None
    aux_loss: torch.FloatTensor | None = None
    lm_loss: torch.FloatTensor | None = None


class MonetRMSNorm(nn.Module):
    """RMSNorm as in LLaMA: computed in float32, scaled by a learned weight (D,)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., D)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


def rotary_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """LLaMA's rotary tables for ``position_ids`` (B, T): cos, sin, each (B, 1, T, head_dim)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32)
                                / head_dim))                              # (head_dim/2,)
    angles = position_ids[..., None].float() * inv_freq                  # (B, T, head_dim/2)
    angles = torch.cat((angles, angles), dim=-1)                          # (B, T, head_dim)
    return angles.cos().to(dtype)[:, None], angles.sin().to(dtype)[:, None]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, T, head_dim) by position (the rotate-half convention of HF LLaMA)."""
    return x * cos + _rotate_half(x) * sin


class MonetAttention(nn.Module):
    """Multi-head causal self-attention with rotary positions and grouped key/value heads (LLaMA)."""

    def __init__(self, config: MonetConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        self.dropout = config.attention_dropout or 0.0
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(self, x, cos, sin, mask=None, past_key_values: Cache | None = None):
        batch, length, _ = x.shape                                                # x: (B, T, D)
        q = self.q_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)  # (B, heads, T, hd)
        k = self.k_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)  # (B, kv_heads, T, hd)
        v = self.v_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if past_key_values is not None:  # (B, kv_heads, S, hd) with the cached keys in front
            k, v = past_key_values.update(k, v, self.layer_idx)
        if self.num_kv_heads != self.num_heads:
            repeat = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        dropout = self.dropout if self.training else 0.0
        if mask is None:  # no padding and no cache offset: plain causal
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=length > 1)
        else:             # mask: (B, 1, T, S) bool, True = may attend
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, -1))         # (B, T, D)


def routing_threshold(moe_topk: int, moe_experts: int) -> float:
    """sigma = Phi^-1(1 - topk / experts): the standard-normal quantile above which ~topk experts lie."""
    if moe_topk >= moe_experts:
        return -math.inf
    return NormalDist().inv_cdf(1.0 - moe_topk / moe_experts)


class MonetRouter(nn.Module):
    """Product-key routing with BatchNorm-estimated thresholds (section 3, "Adaptive Routing").

    Per head h, the logits w1_h·x and w2_h·x over the E experts of each factor are normalized by
    BatchNorm statistics (per head, over tokens and experts; affine=False); experts whose
    normalized logit reaches sigma = Phi^-1(1 - topk/E) pass, the threshold clamped to the head's
    maximum so at least one expert always passes. g1, g2 = softmax over the raw logits that pass
    (eq. 9: zero elsewhere).
    """

    def __init__(self, config: MonetConfig):
        super().__init__()
        self.heads, self.experts = config.moe_heads, config.moe_experts
        self.sigma = routing_threshold(config.moe_topk, config.moe_experts)
        self.w1 = nn.Linear(config.hidden_size, self.heads * self.experts, bias=False)
        self.w2 = nn.Linear(config.hidden_size, self.heads * self.experts, bias=False)
        self.norm1 = nn.BatchNorm1d(self.heads, affine=False)
        self.norm2 = nn.BatchNorm1d(self.heads, affine=False)

    def _factor(self, x, weight: nn.Linear, norm: nn.BatchNorm1d) -> torch.Tensor:
        # routing in at least float32 (float64 when the model is float64)
        work = torch.float64 if norm.running_mean.dtype == torch.float64 else torch.float32
        logits = weight(x).unflatten(-1, (self.heads, self.experts)).to(work)  # (B, T, H, E)
        # BatchNorm1d(H) wants (rows, H): every token and expert is one observation of its head
        rows = logits.transpose(-1, -2).reshape(-1, self.heads)                # (B*T*E, H)
        if norm.running_mean.dtype == work:
            normalized = norm(rows)
        else:  # a model cast to half precision: normalize with float32 copies of the statistics
            mean, var = norm.running_mean.to(work), norm.running_var.to(work)
            normalized = F.batch_norm(rows, mean, var, training=norm.training, momentum=norm.momentum,
                                      eps=norm.eps)
            if norm.training:
                norm.running_mean.copy_(mean)
                norm.running_var.copy_(var)
                norm.num_batches_tracked.add_(1)
        normalized = normalized.view(*logits.shape[:-2], self.experts, self.heads).transpose(-1, -2)  # (B, T, H, E)
        threshold = normalized.amax(-1, keepdim=True).clamp(max=self.sigma)  # (B, T, H, 1)
        passed = normalized >= threshold                                      # (B, T, H, E)
        return torch.softmax(logits.masked_fill(~passed, float("-inf")), dim=-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D) -> g1, g2, each (B, T, H, E) float32, zero outside the kept experts."""
        return self._factor(x, self.w1, self.norm1), self._factor(x, self.w2, self.norm2)


class MonetVerticalExperts(nn.Module):
    """MoVDE (eq. 14-15), computed as the six terms of Appendix A.1 (eq. 22-29, Algorithm 2).

    E_ij(x) = [V11_i s(U1_i x + b11_i) + V12_i s(U2_j x + b21_j) + b12_i ;
               V21_j s(U1_i x + b11_i) + V22_j s(U2_j x + b21_j) + b22_j]   (eq. 13)
    ``u1``/``u2`` hold U1, U2 with biases b11, b21; ``v11``..``v22`` the four output blocks;
    ``b1`` = b12 (E, D/2), ``b2`` = b22 (E, D/2).
    """

    def __init__(self, config: MonetConfig):
        super().__init__()
        self.experts, self.half_dim = config.moe_experts, config.moe_dim // 2
        flat, half_hidden = config.moe_experts * self.half_dim, config.hidden_size // 2
        self.act_fn = ACT2FN[config.hidden_act]
        self.u1 = nn.Linear(config.hidden_size, flat)
        self.u2 = nn.Linear(config.hidden_size, flat)
        self.v11 = nn.Linear(flat, half_hidden, bias=False)
        self.v12 = nn.Linear(flat, half_hidden, bias=False)
        self.v21 = nn.Linear(flat, half_hidden, bias=False)
        self.v22 = nn.Linear(flat, half_hidden, bias=False)
        self.b1 = nn.Parameter(torch.zeros(config.moe_experts, half_hidden))
        self.b2 = nn.Parameter(torch.zeros(config.moe_experts, half_hidden))

    def hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The shared first-layer activations s(U1_i x + b11_i), s(U2_j x + b21_j): each (B, T, E, M/2)."""
        shape = (self.experts, self.half_dim)
        return self.act_fn(self.u1(x).unflatten(-1, shape)), self.act_fn(self.u2(x).unflatten(-1, shape))

    def forward(self, x: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
        g1, g2 = g1.to(x.dtype), g2.to(x.dtype)                  # (B, T, H, E)
        x1, x2 = self.hidden(x)                                  # (B, T, E, M/2)
        g1_total, g2_total = g1.sum(-2), g2.sum(-2)              # (B, T, E): sum_h g (eq. 23, 25)
        # straightflow (eq. 23, 25): (i, i) and (j, j)
        x11 = self.v11((x1 * g1_total[..., None]).flatten(-2))
        x22 = self.v22((x2 * g2_total[..., None]).flatten(-2))
        # crossflow (eq. 26-27): mix over the other factor per head first -> (B, T, H, M/2), never (.., E, E)
        x2_per_head = torch.einsum("btjm,bthj->bthm", x2, g2)
        x12 = self.v12(torch.einsum("bthm,bthi->btim", x2_per_head, g1).flatten(-2))
        x1_per_head = torch.einsum("btim,bthi->bthm", x1, g1)
        x21 = self.v21(torch.einsum("bthm,bthj->btjm", x1_per_head, g2).flatten(-2))
        # bias terms (eq. 28-29)
        x13, x23 = g1_total @ self.b1.to(x.dtype), g2_total @ self.b2.to(x.dtype)   # (B, T, D/2)
        return torch.cat((x11 + x12 + x13, x21 + x22 + x23), dim=-1)              # (B, T, D)


class MonetHorizontalExperts(nn.Module):
    """MoHDE (eq. 7-8) in the reordered form of eq. 12 (Algorithm 1).

    E_ij(x) = V_j s(U_i x + b1_i) + b2_j (eq. 6); ``u`` holds U and b1, ``v`` holds V, ``b`` = b2 (E, D).
    """

    def __init__(self, config: MonetConfig):
        super().__init__()
        self.experts, self.moe_dim = config.moe_experts, config.moe_dim
        flat = config.moe_experts * config.moe_dim
        self.act_fn = ACT2FN[config.hidden_act]
        self.u = nn.Linear(config.hidden_size, flat)
        self.v = nn.Linear(flat, config.hidden_size, bias=False)
        self.b = nn.Parameter(torch.zeros(config.moe_experts, config.hidden_size))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """s(U_i x + b1_i) for every bottom expert i: (B, T, E, M)."""
        return self.act_fn(self.u(x).unflatten(-1, (self.experts, self.moe_dim)))

    def forward(self, x: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
        g1, g2 = g1.to(x.dtype), g2.to(x.dtype)                          # (B, T, H, E)
        per_head = torch.einsum("btim,bthi->bthm", self.hidden(x), g1)  # (B, T, H, M)
        per_top = torch.einsum("bthm,bthj->btjm", per_head, g2)         # (B, T, E, M)
        return self.v(per_top.flatten(-2)) + g2.sum(-2) @ self.b.to(x.dtype)   # (B, T, D)


def routing_aux_losses(g1: torch.Tensor, g2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniformity (eq. 16) and ambiguity (eq. 17) losses of one routing layer; g1, g2 (B, T, H, E).

    Uniformity: -1/(2HE) sum_h sum_i log(mean over tokens of g_hi), i.e. KL(uniform || mean routing)
    up to a constant; the mean is clamped at 1e-9 so unused experts give a finite loss.
    Ambiguity: 1/(2H) sum_h (1 - max_i g_hi), averaged over tokens. The printed eq. 17 carries a
    leading minus, which would reward ambiguous routing, contrary to the text ("encourages the
    model to assign each token to a specific expert with high confidence"); we follow the text.
    """
    uniformity = ambiguity = 0.0
    for g in (g1.float(), g2.float()):
        mean_routing = g.flatten(0, -3).mean(0)                        # (H, E)
        uniformity = uniformity - mean_routing.clamp_min(1e-9).log().mean() / 2
        ambiguity = ambiguity + (1 - g.amax(-1)).mean() / 2
    return uniformity, ambiguity


class MonetDecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + moe(norm(x), g1, g2); a router every ``moe_groups`` layers."""

    def __init__(self, config: MonetConfig, layer_idx: int):
        super().__init__()
        self.self_attn = MonetAttention(config, layer_idx)
        self.input_layernorm = MonetRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = MonetRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        experts = MonetVerticalExperts if config.moe_decompose == "vertical" else MonetHorizontalExperts
        self.moe = experts(config)
        if layer_idx % config.moe_groups == 0:  # grouped routing (paper B.1, C.2)
            self.router = MonetRouter(config)

    def forward(self, x, cos, sin, mask=None, past_key_values=None, previous_router_probs=None):
        """x (B, T, D) -> (x, (g1, g2)); the routing is this layer's or the group's first layer's."""
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, past_key_values)
        normed = self.post_attention_layernorm(x)
        router_probs = self.router(normed) if hasattr(self, "router") else previous_router_probs
        return x + self.moe(normed, *router_probs), router_probs


class MonetPreTrainedModel(PreTrainedModel):
    config_class = MonetConfig
    config: MonetConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["MonetDecoderLayer"]  # noqa: RUF012 (transformers convention)
    _skip_keys_device_placement = ["past_key_values"]  # noqa: RUF012
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MonetVerticalExperts):
            init.zeros_(module.b1)
            init.zeros_(module.b2)
        elif isinstance(module, MonetHorizontalExperts):
            init.zeros_(module.b)


def attention_mask_4d(attention_mask, batch, length, past_length, device) -> torch.Tensor | None:
    """A (B, 1, T, S) boolean mask (True = attend) from a (B, S) padding mask and the cache offset.

    None when plain causal attention suffices (no padding, no cached prefix).
    """
    if past_length == 0 and (attention_mask is None or bool(attention_mask.all())):
        return None
    total = past_length + length
    query_pos = torch.arange(past_length, total, device=device)[:, None]          # (T, 1)
    mask = (torch.arange(total, device=device)[None, :] <= query_pos)[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        mask = mask & attention_mask[:, None, None, -total:].bool()                # (B, 1, T, S)
    # padding rows with nothing to attend to would give NaN: let them attend everywhere (output unused)
    return (mask | ~mask.any(-1, keepdim=True)).expand(batch, 1, length, total)


class MonetModel(MonetPreTrainedModel):
    def __init__(self, config: MonetConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(MonetDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = MonetRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, output_hidden_states=None, output_router_probs=None,
                cache_position=None, return_dict=None, **kwargs) -> MonetModelOutput:
        config = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds   # (B, T, D)
        batch, length = x.shape[:2]
        use_cache = config.use_cache if use_cache is None else use_cache
        use_cache = use_cache and not self.training
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=config)
        if not use_cache:
            past_key_values = None
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            if cache_position is None:
                cache_position = torch.arange(past_length, past_length + length, device=x.device)
            position_ids = cache_position[None].expand(batch, -1)                      # (B, T)
        theta = (config.rope_parameters or {}).get("rope_theta", 10000.0)
        cos, sin = rotary_cos_sin(position_ids, config.head_dim, theta, x.dtype)
        mask = attention_mask_4d(attention_mask, batch, length, past_length, x.device)

        all_hidden = [] if output_hidden_states else None
        routing, router_probs = [], None
        for layer in self.layers:
            if all_hidden is not None:
                all_hidden.append(x)
            x, probs = layer(x, cos, sin, mask, past_key_values, router_probs)
            if hasattr(layer, "router"):  # not `probs is not router_probs`: FSDP hands back views
                routing.append(probs)
            router_probs = probs
        x = self.norm(x)
        if all_hidden is not None:
            all_hidden.append(x)

        aux_loss = None
        if self.training:  # eq. 16-17, averaged over the routing layers
            losses = [sum(routing_aux_losses(*probs)) for probs in routing]
            aux_loss = sum(losses) / len(losses)
        want_probs = config.output_router_probs if output_router_probs is None else output_router_probs
        return MonetModelOutput(last_hidden_state=x, past_key_values=past_key_values,
                                hidden_states=tuple(all_hidden) if all_hidden is not None else None,
                                router_probs=tuple(routing) if want_probs else None, aux_loss=aux_loss)


class MonetForCausalLM(MonetPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}  # noqa: RUF012

    def __init__(self, config: MonetConfig):
        super().__init__(config)
        self.model = MonetModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def get_decoder(self):
        return self.model

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, output_hidden_states=None,
                output_router_probs=None, cache_position=None, logits_to_keep=0, return_dict=None,
                **kwargs) -> MonetCausalLMOutput:
        """Logits (B, T, V); with ``labels`` (B, T), the shifted cross-entropy (-100 ignored) plus
        ``router_aux_loss_coef`` times the auxiliary loss while training (eq. 18)."""
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                             output_hidden_states=output_hidden_states, output_router_probs=output_router_probs,
                             cache_position=cache_position)
        hidden = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)                                            # (B, T, V)
        loss = lm_loss = None
        if labels is not None:
            lm_loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(logits.device),
                                      ignore_index=-100)
            loss = lm_loss
            if outputs.aux_loss is not None:
                loss = lm_loss + self.config.router_aux_loss_coef * outputs.aux_loss
        return MonetCausalLMOutput(loss=loss, logits=logits, past_key_values=outputs.past_key_values,
                                   hidden_states=outputs.hidden_states, router_probs=outputs.router_probs,
                                   aux_loss=outputs.aux_loss, lm_loss=lm_loss)


__all__ = [
    "MonetAttention",
    "MonetConfig",
    "MonetDecoderLayer",
    "MonetForCausalLM",
    "MonetHorizontalExperts",
    "MonetModel",
    "MonetPreTrainedModel",
    "MonetRMSNorm",
    "MonetRouter",
    "MonetVerticalExperts",
    "routing_aux_losses",
    "routing_threshold",
]
