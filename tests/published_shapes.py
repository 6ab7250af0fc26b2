"""Tiny checkpoints in the shapes models are published in: the published config.json of each family
with only the sizes scaled down, saved bf16 and sharded with ``model.safetensors.index.json``.

    save_published_shape(directory, "deepseek_v3")   # -> the config dict written

Kept from the published config.json (the values below): every routing key — expert counts and top-k,
shared experts and their sizes, dense leading layers, ``norm_topk_prob``, group-limited routing
(``n_group``, ``topk_group``, ``topk_method``, ``scoring_func``, ``routed_scaling_factor``), MoE layer
placement (ERNIE's start/interval, Qwen's ``decoder_sparse_step``/``mlp_only_layers``), GPT-OSS's
``swiglu_limit`` and its sliding/full ``layer_types`` pattern — and the attention layout's ratios
(grouped-query heads, MLA with or without ``q_lora_rank``), rope settings, norms' eps, tied embeddings.
The number of experts is the published one for every family. Scaled down (``SCALED``): hidden and
intermediate sizes, head dimensions, vocabulary (token ids of the word tokenizer), layers.
Left out: ``quantization_config`` (DeepSeek-V3 ships FP8, gpt-oss MXFP4: these fixtures are their bf16
form), the multi-token-prediction layer's weights (``num_nextn_predict_layers``; transformers skips
them) and ``auto_map`` (DeepSeek's own modeling code; transformers' native classes load the keys).

Checked against public copies of the hub files (third-party code quoting them): DeepSeek-V2-Lite's
routing, MLA and yarn keys; DeepSeek-V3's routing keys (quoted for DeepSeek-R1-0528, the same
architecture); ERNIE-4.5-21B-A3B's MoE layout, sizes, rope and tied embeddings; Qwen3-30B-A3B's sizes
and expert counts. Not verified here (the model cards and memory): OLMoE-1B-7B-0924's
``norm_topk_prob``/``router_aux_loss_coef``/``clip_qkv``, Mixtral-8x7B's, Qwen1.5-MoE-A2.7B's,
Qwen3-30B-A3B's ``norm_topk_prob``, gpt-oss-20b's (``swiglu_limit``, ``router_aux_loss_coef``, yarn),
ERNIE's ``moe_use_aux_free`` and ``moe_norm_min``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

from tests.tiny_models import save_word_tokenizer

WORDS = [f"w{i}" for i in range(60)]
VOCAB = 96  # the word tokenizer's 62 ids fit

#: the published config.json values kept (hub repository -> its keys)
PUBLISHED = {
    "olmoe": ("allenai/OLMoE-1B-7B-0924", {
        "model_type": "olmoe", "architectures": ["OlmoeForCausalLM"], "hidden_act": "silu",
        "num_experts": 64, "num_experts_per_tok": 8, "norm_topk_prob": False, "router_aux_loss_coef": 0.01,
        "clip_qkv": None, "rope_theta": 10000.0, "rms_norm_eps": 1e-05, "attention_bias": False,
        "tie_word_embeddings": False, "max_position_embeddings": 4096}),
    "mixtral": ("mistralai/Mixtral-8x7B-v0.1", {
        "model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "hidden_act": "silu",
        "num_local_experts": 8, "num_experts_per_tok": 2, "router_aux_loss_coef": 0.02, "sliding_window": None,
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
        "max_position_embeddings": 32768}),
    "qwen2_moe": ("Qwen/Qwen1.5-MoE-A2.7B", {
        "model_type": "qwen2_moe", "architectures": ["Qwen2MoeForCausalLM"], "hidden_act": "silu",
        "num_experts": 60, "num_experts_per_tok": 4, "norm_topk_prob": False, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "router_aux_loss_coef": 0.001, "use_sliding_window": False,
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "tie_word_embeddings": False,
        "max_position_embeddings": 8192}),
    "qwen3_moe": ("Qwen/Qwen3-30B-A3B", {
        "model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"], "hidden_act": "silu",
        "num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": True, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "router_aux_loss_coef": 0.001, "use_sliding_window": False,
        "attention_bias": False, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "tie_word_embeddings": False,
        "max_position_embeddings": 40960}),
    "deepseek_v2": ("deepseek-ai/DeepSeek-V2-Lite", {
        "model_type": "deepseek_v2", "architectures": ["DeepseekV2ForCausalLM"], "hidden_act": "silu",
        "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6, "first_k_dense_replace": 1,
        "moe_layer_freq": 1, "topk_method": "greedy", "n_group": 1, "topk_group": 1, "scoring_func": "softmax",
        "norm_topk_prob": False, "routed_scaling_factor": 1.0, "aux_loss_alpha": 0.001, "seq_aux": True,
        "q_lora_rank": None, "attention_bias": False, "rope_theta": 10000, "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False, "max_position_embeddings": 163840,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707}}),
    "deepseek_v3": ("deepseek-ai/DeepSeek-V3", {
        "model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"], "hidden_act": "silu",
        "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
        "moe_layer_freq": 1, "topk_method": "noaux_tc", "n_group": 8, "topk_group": 4, "scoring_func": "sigmoid",
        "norm_topk_prob": True, "routed_scaling_factor": 2.5, "aux_loss_alpha": 0.001, "seq_aux": True,
        "attention_bias": False, "rope_theta": 10000, "rms_norm_eps": 1e-06, "tie_word_embeddings": False,
        "max_position_embeddings": 163840,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}}),
    "ernie4_5_moe": ("baidu/ERNIE-4.5-21B-A3B-PT", {
        "model_type": "ernie4_5_moe", "architectures": ["Ernie4_5_MoeForCausalLM"], "hidden_act": "silu",
        "moe_num_experts": 64, "moe_k": 6, "moe_num_shared_experts": 2, "moe_layer_start_index": 1,
        "moe_layer_interval": 1, "moe_use_aux_free": True, "moe_norm_min": 1e-12, "use_bias": False,
        "rope_theta": 500000, "rms_norm_eps": 1e-05, "tie_word_embeddings": True,
        "max_position_embeddings": 131072}),
    "gpt_oss": ("openai/gpt-oss-20b", {
        "model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"], "hidden_act": "silu",
        "num_local_experts": 32, "num_experts_per_tok": 4, "experts_per_token": 4, "swiglu_limit": 7.0,
        "router_aux_loss_coef": 0.9, "sliding_window": 128, "attention_bias": True, "rope_theta": 150000,
        "rms_norm_eps": 1e-05, "tie_word_embeddings": False, "max_position_embeddings": 131072,
        "initial_context_length": 4096,
        "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                         "truncate": False, "original_max_position_embeddings": 4096}}),
}

#: the scaled-down sizes (published in the comments)
SCALED = {
    # 2048 hidden, 1024 per expert, 16 layers, 16 heads (MHA)
    "olmoe": {"hidden_size": 64, "intermediate_size": 16, "num_hidden_layers": 3, "num_attention_heads": 4,
              "num_key_value_heads": 4},
    # 4096 hidden, 14336 per expert, 32 layers, 32 heads / 8 kv heads, head_dim 128
    "mixtral": {"hidden_size": 64, "intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 8,
                "num_key_value_heads": 2, "head_dim": 8},
    # 2048 hidden, 1408 per expert, shared expert 5632, dense 5632, 24 layers, 16 heads (MHA)
    "qwen2_moe": {"hidden_size": 64, "intermediate_size": 64, "moe_intermediate_size": 16,
                  "shared_expert_intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
                  "num_key_value_heads": 4, "max_window_layers": 3},
    # 2048 hidden, 768 per expert, 6144 dense, 48 layers, 32 heads / 4 kv heads, head_dim 128
    "qwen3_moe": {"hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 16, "num_hidden_layers": 3,
                  "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 16},
    # 2048 hidden, 1408 per expert, 10944 dense, 27 layers, 16 heads, MLA kv_lora 512, rope/nope/v 64/128/128
    "deepseek_v2": {"hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 16, "num_hidden_layers": 3,
                    "num_attention_heads": 4, "num_key_value_heads": 4, "kv_lora_rank": 16, "qk_rope_head_dim": 8,
                    "qk_nope_head_dim": 16, "v_head_dim": 16},
    # 7168 hidden, 2048 per expert, 18432 dense, 61 layers (3 dense), 128 heads, q_lora 1536, kv_lora 512
    "deepseek_v3": {"hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 16, "num_hidden_layers": 5,
                    "num_attention_heads": 4, "num_key_value_heads": 4, "q_lora_rank": 24, "kv_lora_rank": 16,
                    "qk_rope_head_dim": 8, "qk_nope_head_dim": 16, "v_head_dim": 16},
    # 2560 hidden, 1536 per expert, 12288 dense, 28 layers (MoE from 1 to the last), 20 heads / 4 kv heads
    "ernie4_5_moe": {"hidden_size": 80, "intermediate_size": 96, "moe_intermediate_size": 16,
                     "num_hidden_layers": 3, "moe_layer_end_index": 2, "num_attention_heads": 5,
                     "num_key_value_heads": 1},
    # 2880 hidden and per expert, 24 layers (sliding, full, ...), 64 heads / 8 kv heads, head_dim 64
    "gpt_oss": {"hidden_size": 64, "intermediate_size": 32, "num_hidden_layers": 4, "num_attention_heads": 8,
                "num_key_value_heads": 1, "head_dim": 8,
                "layer_types": ["sliding_attention", "full_attention"] * 2},
}

FAMILIES = list(PUBLISHED)
#: the published config.json keys each fixture must keep verbatim (every routing-relevant one)
ROUTING_KEYS = {family: sorted(k for k in keys if k not in ("architectures", "model_type"))
                for family, (_, keys) in PUBLISHED.items()}


def published_config(family: str) -> dict:
    """The config.json a fixture of ``family`` has: the published keys, then the scaled sizes."""
    _, keys = PUBLISHED[family]
    return {**keys, **SCALED[family], "vocab_size": VOCAB, "pad_token_id": 1, "bos_token_id": None,
            "eos_token_id": None, "dtype": "bfloat16"}


def build_model(family: str, seed: int = 0):
    """The random bf16 model of the fixture (router and score-correction biases random, so they matter)."""
    values = published_config(family)
    config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    keep = getattr(model, "_keep_in_fp32_modules_strict", None) or []
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if any(pattern in name for pattern in keep):  # float32 on disk too, as published (and as loaded)
                tensor.data = tensor.data.float()
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if "e_score_correction_bias" in name or name.endswith("router.bias") or "moe_statics" in name:
                tensor.copy_(torch.randn_like(tensor) * 0.1)
    return model


def save_published_shape(directory, family: str, shards: int = 4, seed: int = 0) -> dict:
    """Save the fixture to ``directory``: bf16 weights in >= 3 shards plus the index, a word tokenizer."""
    directory = Path(directory)
    model = build_model(family, seed)
    sizes = [t.numel() * t.element_size() for t in model.state_dict().values()]
    limit = max(max(sizes), sum(sizes) // shards)
    model.save_pretrained(directory, max_shard_size=limit)
    save_word_tokenizer(directory, WORDS)
    files = sorted(directory.glob("model-*.safetensors"))
    assert len(files) >= 3 and (directory / "model.safetensors.index.json").is_file(), (family, files)
    return json.loads((directory / "config.json").read_text())


def shard_files(directory) -> list[Path]:
    return sorted(Path(directory).glob("*.safetensors"))


def index_tensors(directory) -> dict[str, str]:
    """The index's ``weight_map`` (tensor name -> shard file)."""
    return json.loads((Path(directory) / "model.safetensors.index.json").read_text())["weight_map"]


def checkpoint_tensors(directory) -> dict[str, tuple[str, torch.dtype]]:
    """Every tensor in the directory's safetensors files: name -> (file, dtype)."""
    from safetensors import safe_open

    found = {}
    for path in shard_files(directory):
        with safe_open(str(path), "pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                found[name] = (path.name, handle.get_slice(name).get_dtype())
    return found
