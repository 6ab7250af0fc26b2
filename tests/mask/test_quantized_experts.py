"""moe-mask on quantized experts in the published layouts (tests/quantized_shapes.py: gpt-oss MXFP4,
DeepSeek-V3 block FP8): ``pruned`` and ``bias`` write the quantized tensors sliced, the kept experts'
blocks and scales byte for byte the input's, so the experts take (kept / all) of their input size;
transformers loads the result (dequantized on this CPU) and its logits are the in-memory masked model's."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors import safe_open

from moetools.mask import mask_directory, masked
from moetools.models.loader import load_model
from tests.published_shapes import checkpoint_tensors, index_tensors, shard_files
from tests.quantized_shapes import pack_mxfp4, save_fp8_deepseek_v3, save_mxfp4_gpt_oss, unpack_mxfp4

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
QUANTIZED = {"gpt_oss": ("U8",), "deepseek_v3": ("F8_E4M3", "F32")}
_PER_EXPERT = re.compile(r"^(?P<head>.*\.experts\.)(?P<expert>\d+)(?P<tail>\..+)$")


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantized")
    save_mxfp4_gpt_oss(root / "gpt_oss")
    save_fp8_deepseek_v3(root / "deepseek_v3")
    return root


def test_mxfp4_packing_round_trips_exactly_representable_values():
    values = torch.tensor([0.5, -1.5, 6.0, 0.0, 3.0, -4.0, 2.0, 1.0] * 4) * 2.0 ** -3
    blocks, scales = pack_mxfp4(values[None])
    assert blocks.shape == (1, 1, 16) and scales.shape == (1, 1) and int(scales) == 127 - 3
    assert torch.equal(unpack_mxfp4(blocks, scales)[0], values)


def _tensors(directory) -> dict[str, tuple[str, str]]:
    return checkpoint_tensors(directory)


def _read(directory, name):
    file = index_tensors(directory)[name]
    with safe_open(str(directory / file), "pt") as handle:
        return handle.get_tensor(name)


def _expert_bytes(directory, dtypes) -> int:
    total = 0
    for path in shard_files(directory):
        with safe_open(str(path), "pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                piece = handle.get_slice(name)
                if ".experts." in name and piece.get_dtype() in dtypes:
                    total += handle.get_tensor(name).numel() * handle.get_tensor(name).element_size()
    return total


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["equal", "unequal"])
@pytest.mark.parametrize("family", ["gpt_oss", "deepseek_v3"])
def test_mask_slices_quantized_experts_bit_for_bit(quantized, tmp_path, family, kind):
    source = quantized / family
    base = load_model(source, tokenizer=False)
    assert base.model.dtype == torch.bfloat16  # dequantized by transformers on this CPU
    layers = [layer.index for layer in base.adapter.moe_layers()]
    num = base.adapter.moe_layers()[0].num_experts
    if kind == "equal":  # DeepSeek-V3: one expert of each of its 8 groups
        sets = {layer: list(range(0, 256, 32)) if family == "deepseek_v3" else [1, 5, 9, 20] for layer in layers}
    else:
        sets = {layer: [[0, 3, 6], [2], [4, 7], [9]][n] for n, layer in enumerate(layers)}
    (tmp_path / "experts.json").write_text(json.dumps({"experts": {str(k): v for k, v in sets.items()}}))
    out = tmp_path / "masked"
    record = mask_directory(source, tmp_path / "experts.json", out)
    assert record["mode"] == ("pruned" if kind == "equal" else "bias")
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == json.loads((source / "config.json").read_text())["quantization_config"]
    theirs, mine = _tensors(source), _tensors(out)
    assert set(index_tensors(out)) == set(mine) and len(shard_files(out)) == len(shard_files(source))
    checked = 0
    for name, (_, dtype) in mine.items():
        assert dtype == theirs.get(name, (None, dtype))[1], name
        if dtype not in QUANTIZED[family] or ".experts." not in name:
            continue
        layer = int(re.search(r"layers\.(\d+)\.", name)[1])
        kept = [i for i in range(num) if i not in sets[layer]] if kind == "equal" else list(range(num))
        per_expert = _PER_EXPERT.match(name)
        if per_expert:  # FP8, one tensor per expert: expert new <- kept[new]
            old = f"{per_expert['head']}{kept[int(per_expert['expert'])]}{per_expert['tail']}"
            assert _read(out, name).view(torch.uint8).equal(_read(source, old).view(torch.uint8)), name
        else:  # MXFP4, experts fused on dim 0
            assert _read(out, name).equal(_read(source, name)[kept]), name
        checked += 1
    assert checked
    dtypes = QUANTIZED[family]
    kept_fraction = 1 - len(sets[layers[0]]) / num if kind == "equal" else 1.0
    ratio = _expert_bytes(out, dtypes) / _expert_bytes(source, dtypes)
    assert abs(ratio - kept_fraction) <= 0.05 * kept_fraction, (ratio, kept_fraction)
    size_in, size_out = (sum(p.stat().st_size for p in shard_files(d)) for d in (source, out))
    assert size_out <= size_in * 1.01
    loaded = load_model(out, tokenizer=False).model
    input_ids = torch.randint(2, 62, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), masked(base.model, sets):
        reference = base.model(input_ids).logits.float()
    with torch.no_grad():
        logits = loaded(input_ids).logits.float()
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt_oss", "deepseek_v3"])
def test_tune_refuses_a_quantized_base_in_one_line(quantized, tmp_path, family):
    from click.testing import CliRunner

    from moetools.cli.tune import command
    from tests.models.test_published_shapes import write_corpus

    (tmp_path / "experts.json").write_text(json.dumps({"experts": {"3": [0, 1]}}))
    result = CliRunner().invoke(command, [str(quantized / family), "--data", str(write_corpus(tmp_path / "d.jsonl")),
                                          "-o", str(tmp_path / "out"), "--experts", str(tmp_path / "experts.json")])
    assert result.exit_code == 2, result.output
    method = "mxfp4" if family == "gpt_oss" else "fp8"
    assert result.output.startswith("moe-tune: ") and f"quant_method {method!r}" in result.output, result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt_oss", "deepseek_v3"])
def test_trace_says_it_traced_the_dequantized_model(quantized, tmp_path, family):
    import numpy as np
    from click.testing import CliRunner

    from moetools.cli.trace import command
    from moetools.streams import StreamReader
    from tests.models.test_published_shapes import write_corpus

    out = tmp_path / "trace.msgpack.zst"
    result = CliRunner().invoke(command, [str(quantized / family), str(write_corpus(tmp_path / "c.jsonl")),
                                          "--batch-size", "1", "--precision", "24", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with open(out, "rb") as handle:
        reader = StreamReader(handle, kinds="trace", validate=True)
        records, header = list(reader), reader.header
    method = "mxfp4" if family == "gpt_oss" else "fp8"
    assert header["quantized_weights"] == {"quant_method": method, "dequantized": True, "dtype": "bfloat16"}
    loaded = load_model(quantized / family, tokenizer=False)  # what transformers computes here
    layers = loaded.adapter.moe_layers()
    seen = []
    hooks = [layer.router.register_forward_hook(lambda m, a, o: seen.append(o)) for layer in layers]
    try:
        for record in records:
            seen.clear()
            with torch.no_grad():
                loaded.model(torch.tensor(record["tokens"].astype(np.int64))[None])
            for position, (_, gates, ids) in enumerate(seen):
                assert np.array_equal(record["experts"][position], ids.numpy())
                assert np.array_equal(record["gates"][position], gates.float().numpy())
    finally:
        for hook in hooks:
            hook.remove()
