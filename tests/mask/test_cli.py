"""moe-mask's command line: a masked directory from a tiny OLMoE, and one-line refusals (exit 2)."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from click.testing import CliRunner

from moetools.cli.mask import command
from moetools.models import load_model, model_identity
from tests.tiny_models import save_tiny_olmoe

WORDS = [f"w{i}" for i in range(40)]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("maskcli")
    save_tiny_olmoe(root / "base", WORDS)
    identity = model_identity(load_model(root / "base", tokenizer=False).model, path=root / "base")
    return root, identity


def experts_file(path, experts, model=None):
    data = {"experts": {str(k): v for k, v in experts.items()}}
    if model is not None:
        data["moetools"] = {"version": 1, "model": model}
    path.write_text(json.dumps(data))
    return path


def invoke(*args):
    return CliRunner().invoke(command, [str(a) for a in args])


def test_masks_to_a_directory_transformers_loads(base, tmp_path):
    root, identity = base
    out = tmp_path / "masked"
    result = invoke(root / "base", "--experts", experts_file(tmp_path / "e.json", {0: [1, 2], 1: [0, 7]}, identity),
                    "-o", out)
    assert result.exit_code == 0, result.output
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_experts == 6 and model.config.moe_mask["mode"] == "pruned"
    assert model(torch.tensor([[2, 3, 4]])).logits.shape == (1, 3, 64)
    assert invoke(root / "base", "--experts", tmp_path / "e.json", "-o", out).exit_code == 2  # exists
    assert invoke(root / "base", "--experts", tmp_path / "e.json", "-o", out, "--force").exit_code == 0
    # masking a masked directory again is refused: mask the base with the union instead
    assert invoke(out, "--experts", tmp_path / "e.json", "-o", tmp_path / "again").exit_code == 2


@pytest.mark.parametrize("content, message", [
    ("not json", "not JSON"),
    ({"experts": {"0": [8]}}, "out of range"),
    ({"experts": {"5": [1]}}, "layer"),
    ({"experts": {"0": list(range(8))}}, "every expert"),
    ({"experts": {"0": list(range(7))}}, "fewer than top-k"),
    ({"experts": {"0": [1]}, "moetools": {"version": 1, "model": {"name": "x", "fingerprint": "sha256:00"}}},
     "refusing"),
])
def test_bad_experts_file_exits_2_with_one_line(base, tmp_path, content, message):
    root, _ = base
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    result = invoke(root / "base", "--experts", path, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_sharded_streaming_write_equals_one_file(base, tmp_path):
    """A source sharded over many files gives as many output files (an index) and the same model as one
    file; every tensor is the one safetensors reads from the source, transformed."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from moetools.mask.directory import _meta_model
    from moetools.mask.plan import plan_mask
    from moetools.mask.stream import transform, write_weights

    root, _ = base
    transformers.AutoModelForCausalLM.from_pretrained(root / "base").save_pretrained(tmp_path / "sharded",
                                                                                     max_shard_size=20_000)
    sources = {"one": root / "base", "many": tmp_path / "sharded"}
    model, adapter = _meta_model(root / "base")
    plan = plan_mask(model, adapter, {0: [3], 1: [5]})
    for name, source in sources.items():
        (tmp_path / name).mkdir()
        write_weights(source, tmp_path / name, plan)
        for extra in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            text = (root / "base" / extra).read_text()
            if extra == "config.json":
                text = json.dumps(dict(json.loads(text), num_experts=7))
            (tmp_path / name / extra).write_text(text)
        written = {}
        for path in (tmp_path / name).glob("*.safetensors"):
            written.update(load_file(str(path)))
        expected = {}
        for path in source.glob("*.safetensors"):
            with safe_open(str(path), "pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                    result = transform(key, handle.get_tensor(key), plan)
                    if result is not None:
                        expected[result[0]] = result[1]
        assert written.keys() == expected.keys()
        assert all(torch.equal(written[key], expected[key]) for key in expected)
    files = list((tmp_path / "many").glob("*.safetensors"))
    assert len(files) == len(list(sources["many"].glob("*.safetensors"))) > 3
    index = json.loads((tmp_path / "many" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {path.name for path in files}
    ids = torch.tensor([[2, 3, 4, 5]])
    one = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "one")(ids).logits
    many = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "many")(ids).logits
    assert torch.equal(one, many)


@pytest.mark.parametrize("experts", [{0: [1, 2], 1: [0, 7]}, {0: [1, 2, 3], 1: [7]}], ids=["pruned", "remote"])
def test_moe_trace_of_the_masked_directory_never_selects_a_masked_expert(base, tmp_path, experts):
    """The project's tracer (the moe-trace CLI) on OUT: mapped back to original ids, no masked expert."""
    import numpy as np

    from moetools.cli.trace import command as trace_command
    from moetools.streams import StreamReader

    root, identity = base
    out = tmp_path / "masked"
    assert invoke(root / "base", "--experts", experts_file(tmp_path / "e.json", experts, identity), "-o", out) \
        .exit_code == 0
    record = json.loads((out / "config.json").read_text())["moe_mask"]
    rng = np.random.default_rng(0)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{n}", "text": " ".join(rng.choice(WORDS, size=30))}) + "\n"
                              for n in range(6)))
    result = CliRunner().invoke(trace_command, [str(out), str(corpus), "-o", str(tmp_path / "t.msgpack.zst")])
    if record["mode"] == "remote":  # moe-trace loads without trust_remote_code: refused, never traced unmasked
        assert result.exit_code == 2 and not (tmp_path / "t.msgpack.zst").exists(), result.output
        return  # (tests/mask/test_mask.py traces remote-mode directories through the adapter's capture)
    assert result.exit_code == 0, result.output
    with open(tmp_path / "t.msgpack.zst", "rb") as handle:
        reader = StreamReader(handle, kinds="trace")
        sequences = [r for r in reader if r["type"] == "sequence"]
        layers = reader.header["layers"]
    seen = 0
    for sequence in sequences:
        for position, layer in enumerate(layers):
            back = {v: int(k) for k, v in record["layers"][str(layer)]["map"].items()}
            originals = {back[int(i)] for i in np.asarray(sequence["experts"][position]).ravel()}
            assert not originals & set(experts[layer])
            seen += len(originals)
    assert seen
