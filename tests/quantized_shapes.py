"""Quantized-expert checkpoints in the published layouts, packed here from the bf16 published-shape
fixtures (tests/published_shapes.py):

- gpt-oss MXFP4 (the OCP microscaling format): every expert matrix ``experts.gate_up_proj`` /
  ``experts.down_proj`` [E, in, out] becomes ``*_blocks`` uint8 [E, out, in/32, 16] (32 FP4 e2m1 values
  per block, two per byte, the lower nibble first) and ``*_scales`` uint8 [E, out, in/32] (one e8m0
  power-of-two exponent per block, biased by 127); ``quantization_config`` ``{"quant_method": "mxfp4"}``.
- DeepSeek-V3 block FP8: every linear weight but the embeddings, the unembedding, the norms and the
  router becomes float8_e4m3fn with ``weight_scale_inv`` float32 [ceil(out/128), ceil(in/128)], one
  scale per 128×128 block (weight ≈ fp8 × scale_inv); ``quantization_config`` ``{"quant_method": "fp8",
  "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}``.

transformers dequantizes both to bf16 when it loads them on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tests.published_shapes import save_published_shape, shard_files

FP4_VALUES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
FP8_BLOCK = 128
#: FP8 keeps these in bf16 (as the published DeepSeek-V3 does)
FP8_SKIPPED = ("embed_tokens", "lm_head", "norm", "mlp.gate.weight", "e_score_correction_bias")


def pack_mxfp4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` [..., K] (K a multiple of 32) -> (blocks [..., K/32, 16] uint8, scales [..., K/32] uint8)."""
    *lead, k = weight.shape
    groups = weight.float().reshape(*lead, k // 32, 32)
    exponent = torch.floor(torch.log2(groups.abs().amax(-1).clamp(min=2.0 ** -126))) - 2  # 6 = 1.5 * 2^2
    codes = (groups / torch.pow(2.0, exponent)[..., None])[..., None].sub(FP4_VALUES).abs().argmin(-1)
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).to(torch.uint8)
    return blocks, (exponent + 127).to(torch.uint8)


def unpack_mxfp4(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The float32 values of :func:`pack_mxfp4`'s output, [..., K]."""
    codes = torch.stack([blocks & 0x0F, blocks >> 4], dim=-1).reshape(*blocks.shape[:-1], 32).long()
    values = FP4_VALUES[codes] * torch.pow(2.0, scales.float() - 127)[..., None]
    return values.reshape(*values.shape[:-2], -1)


def quantize_fp8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` [out, in] -> (float8_e4m3fn [out, in], scale_inv float32 [ceil(out/128), ceil(in/128)])."""
    out, inn = weight.shape
    rows, cols = -(-out // FP8_BLOCK), -(-inn // FP8_BLOCK)
    scales = torch.empty(rows, cols, dtype=torch.float32)
    packed = torch.empty(out, inn, dtype=torch.float8_e4m3fn)
    for r in range(rows):
        for c in range(cols):
            block = (slice(r * FP8_BLOCK, (r + 1) * FP8_BLOCK), slice(c * FP8_BLOCK, (c + 1) * FP8_BLOCK))
            tile = weight[block].float()
            scales[r, c] = tile.abs().max().clamp(min=1e-12) / 448.0  # e4m3's largest finite value
            packed[block] = (tile / scales[r, c]).to(torch.float8_e4m3fn)
    return packed, scales


def _rewrite(directory: Path, convert, quantization_config: dict) -> None:
    """Convert each shard's tensors (``convert(name, tensor) -> {name: tensor}``), fix the index and config."""
    index_path = directory / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"], total = {}, 0
    for path in shard_files(directory):
        tensors = {}
        for name, tensor in load_file(str(path)).items():
            tensors.update(convert(name, tensor))
        save_file(tensors, str(path), metadata={"format": "pt"})
        for name, tensor in tensors.items():
            index["weight_map"][name] = path.name
            total += tensor.numel() * tensor.element_size()
    index["metadata"] = {"total_size": total}
    index_path.write_text(json.dumps(index, indent=2))
    config = json.loads((directory / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def save_mxfp4_gpt_oss(directory) -> None:
    """The gpt-oss published-shape fixture with MXFP4 experts (sharded, bf16 elsewhere)."""
    directory = Path(directory)
    save_published_shape(directory, "gpt_oss")

    def convert(name, tensor):
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            blocks, scales = pack_mxfp4(tensor.transpose(-1, -2))  # [E, in, out] -> [E, out, in]
            return {f"{name}_blocks": blocks, f"{name}_scales": scales}
        return {name: tensor}

    _rewrite(directory, convert, {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]})


def save_fp8_deepseek_v3(directory) -> None:
    """The DeepSeek-V3 published-shape fixture with block FP8 linear weights (per-expert, as published)."""
    directory = Path(directory)
    save_published_shape(directory, "deepseek_v3")

    def convert(name, tensor):
        if name.endswith(".weight") and tensor.dim() == 2 and not any(skip in name for skip in FP8_SKIPPED):
            packed, scales = quantize_fp8(tensor)
            return {name: packed, f"{name}_scale_inv": scales}
        return {name: tensor}

    _rewrite(directory, convert, {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                  "weight_block_size": [FP8_BLOCK, FP8_BLOCK]})
