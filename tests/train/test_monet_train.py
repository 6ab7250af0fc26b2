"""monet-train end to end on a tiny corpus: every arch writes a loadable directory, resume
continues the loss curve exactly, torchrun (gloo; DDP and --fsdp) matches one process, bad input fails clearly."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import moetools.models.monet  # noqa: F401  (registers MONET with the Auto classes)
from moetools.cli.monet_train import command
from moetools.streams.outputs import MARKER
from moetools.training.checkpoint import flatten_optimizer_state, unflatten_optimizer_state

REPO = Path(__file__).resolve().parents[2]
TINY = ["--steps", "4", "--batch-size", "4", "--seq-len", "24", "--d-model", "32", "--layers", "2", "--heads", "2",
        "--moe-experts", "8", "--moe-topk", "2", "--moe-dim", "4", "--moe-heads", "2", "--moe-groups", "2",
        "--vocab-size", "300", "--eval-every", "2", "--checkpoint-every", "2", "-q"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    words = {"pets": ["the", "cat", "sat", "on", "a", "mat", "and", "the", "dog", "barked", "at", "the", "cat"],
             "code": ["def", "loop", "return", "value", "for", "item", "in", "list", "if", "else", "while", "print"]}
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with open(path, "w") as handle:
        for index in range(80):
            domain = "pets" if index % 2 else "code"
            text = " ".join(rng.choice(words[domain]) for _ in range(60))
            handle.write(json.dumps({"text": text, "domain": domain, "id": index}) + "\n")
    return path


def run(args):
    return CliRunner().invoke(command, args)


def train_log(directory):
    return [json.loads(line) for line in (Path(directory) / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("arch,model_type", [("monet-vd", "monet"), ("monet-hd", "monet"), ("llama", "llama"),
                                             ("moe", "olmoe")])
def test_each_arch_writes_a_loadable_directory(tmp_path, corpus, arch, model_type):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moetools.models.loader import load_model

    out = tmp_path / "out"
    result = run(["--data", str(corpus), "-o", str(out), "--arch", arch, *TINY])
    assert result.exit_code == 0, result.output
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training_metadata.json", "train_log.jsonl"):
        assert (out / name).exists(), name
    metadata = json.loads((out / "training_metadata.json").read_text())
    assert metadata["steps"] == 4 and metadata["arch"] == arch
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.config.model_type == model_type
    # every tensor saved is the one loaded: the tools' loader refuses missing or unexpected ones
    assert load_model(out, require_moe=False).model.config.model_type == model_type
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("the cat sat", return_tensors="pt").input_ids
    assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))
    records = train_log(out)
    assert [r["step"] for r in records if r["type"] == "train"] == [1, 2, 3, 4]
    assert {"pets", "code"} >= set(next(r for r in records if r["type"] == "eval")["eval_loss_by_domain"])


def test_baselines_match_monet_active_parameters(tmp_path, corpus):
    from moetools.train.models import monet_expert_parameters, resolve_model_config

    special = {"eos_token_id": 0, "bos_token_id": 0, "pad_token_id": 1}
    settings = {"hidden_size": 64, "moe_experts": 16, "moe_dim": 8}
    expert = monet_expert_parameters(64, 16, 8)
    llama = resolve_model_config("llama", settings, 300, special)
    # sizes are rounded to a multiple of 8 (aligned strides for the fused experts): at most 4 units off
    assert llama["intermediate_size"] % 8 == 0
    assert abs(3 * 64 * llama["intermediate_size"] - expert) <= 3 * 64 * 4
    moe = resolve_model_config("moe", settings, 300, special)
    assert moe["intermediate_size"] % 8 == 0
    assert abs(3 * 64 * moe["intermediate_size"] * moe["num_experts_per_tok"] - expert) <= 3 * 64 * 2 * 4


def test_moe_load_balancing_weight_from_config_reaches_the_model(tmp_path, corpus):
    """``router_aux_loss_coef`` in --config is the MoE's load-balancing weight, not a MONET-only key dropped
    on the way: the trained OLMoE's config carries it and its loss adds that multiple of the aux loss."""
    from transformers import AutoModelForCausalLM

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"router_aux_loss_coef": 0.25, "num_experts": 4}))
    out = tmp_path / "moe"
    result = run(["--data", str(corpus), "--arch", "moe", *TINY, "--config", str(config), "-o", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads((out / "config.json").read_text())
    assert written["router_aux_loss_coef"] == 0.25 and written["num_experts"] == 4
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(2, 300, (2, 16))
    with torch.no_grad():
        outputs = model(input_ids=ids, labels=ids)
        plain = model(input_ids=ids, labels=ids, output_router_logits=False).loss
    assert torch.allclose(outputs.loss, plain + 0.25 * outputs.aux_loss)


def test_load_balancing_weight_for_the_dense_baseline_is_refused(tmp_path, corpus):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"router_aux_loss_coef": 0.1}))
    result = run(["--data", str(corpus), "--arch", "llama", *TINY, "--config", str(config),
                  "-o", str(tmp_path / "llama")])
    assert result.exit_code == 2
    assert "router_aux_loss_coef" in result.output and "Traceback" not in result.output


def test_moe_baseline_at_the_default_shape_trains_a_step():
    """The default MoE baseline goes through transformers' fused grouped_mm experts (aligned strides)."""
    import torch

    from moetools.train.models import build_model, resolve_model_config

    special = {"eos_token_id": 0, "bos_token_id": 0, "pad_token_id": 1}
    config = resolve_model_config("moe", {}, 300, special)
    torch.manual_seed(0)
    model = build_model("moe", config)
    ids = torch.randint(2, 300, (2, 16))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert model.model.layers[0].mlp.experts.gate_up_proj.grad is not None


def test_resume_continues_the_loss_curve_exactly(tmp_path, corpus):
    straight, split = tmp_path / "straight", tmp_path / "split"
    args = ["--data", str(corpus), "--arch", "monet-vd", *TINY, "--steps", "6"]
    assert run([*args, "-o", str(straight)]).exit_code == 0
    first = run([*args, "-o", str(split), "--stop-at-step", "3"])
    assert first.exit_code == 0, first.output
    assert [r["step"] for r in train_log(split) if r["type"] == "train"] == [1, 2, 3]
    saved = json.loads((split / "checkpoint" / "trainer_state.json").read_text())
    assert saved["step"] == 3 and saved["data_position"]["samples_seen"] == 12
    assert sorted(p.name for p in (split / "checkpoint").iterdir()) == [
        MARKER, "model.safetensors", "optimizer.json", "optimizer.safetensors", "rng.safetensors", "trainer_state.json"]
    second = run([*args, "-o", str(split), "--resume"])
    assert second.exit_code == 0, second.output
    losses = {r["step"]: r["loss"] for r in train_log(straight) if r["type"] == "train"}
    resumed = {r["step"]: r["loss"] for r in train_log(split) if r["type"] == "train"}
    assert resumed == losses  # bit-for-bit, steps 4-6 included
    from safetensors.torch import load_file
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(split / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_given_tokenizer_directory_is_used_and_saved(tmp_path, corpus):
    from transformers import AutoTokenizer

    first, second = tmp_path / "first", tmp_path / "second"
    assert run(["--data", str(corpus), "-o", str(first), "--arch", "llama", *TINY, "--steps", "1"]).exit_code == 0
    result = run(["--data", str(corpus), "-o", str(second), "--arch", "llama", *TINY, "--steps", "1",
                  "--tokenizer", str(first), "--vocab-size", "999"])
    assert result.exit_code == 0, result.output
    given, saved = AutoTokenizer.from_pretrained(first), AutoTokenizer.from_pretrained(second)
    assert given.get_vocab() == saved.get_vocab()
    assert json.loads((second / "config.json").read_text())["vocab_size"] == len(given)


def test_optimizer_state_round_trips_through_tensors_and_json():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    tensors, meta = flatten_optimizer_state(optimizer.state_dict())
    json.dumps(meta)
    rebuilt = unflatten_optimizer_state(tensors, json.loads(json.dumps(meta)))
    original = optimizer.state_dict()
    for index, values in original["state"].items():
        for key, value in values.items():
            assert torch.equal(rebuilt["state"][index][key], value)


@pytest.mark.parametrize("args,message", [
    (["--arch", "mixtral"], "Invalid value for '--arch'"),
    (["--moe-topk", "9"], "--moe-topk 9 must be between 1 and --moe-experts 8"),
    (["--arch", "monet-vd", "--moe-dim", "3"], "both must be even"),
    (["--arch", "monet-vd", "--d-model", "33", "--heads", "3"], "both must be even (--d-model 33"),
])
def test_bad_settings_fail_with_clear_messages(tmp_path, corpus, args, message):
    result = run(["--data", str(corpus), "-o", str(tmp_path / "out"), *TINY, *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_empty_data_fails_clearly(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    result = run(["--data", str(empty), "-o", str(tmp_path / "out"), *TINY])
    assert result.exit_code == 3 and f"{empty}: empty input: no documents" in result.output
    missing = tmp_path / "other.jsonl"
    missing.write_text('{"text": "fine"}\n{"body": "hello"}\n')
    result = run(["--data", str(missing), "-o", str(tmp_path / "out"), *TINY])
    assert result.exit_code == 2 and f"{missing}:2: no string field 'text'" in result.output


@pytest.mark.parametrize("content,line,reason", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", 1, "invalid UTF-8 at byte"),      # a binary file
    (b'{"text": "one"}\n{"text": "two"}\n{"text": "caf\xe9"}\n', 3, "invalid UTF-8 at byte 13"),
    (b'{"text": "one"}\n{"text": "two"}\n[3]\n', 3, "not a JSON object"),
    (b'{"text": "one"}\n{"text": "two"\n', 2, "not valid JSON"),
])
def test_bad_data_lines_stop_with_the_file_and_line(tmp_path, content, line, reason):
    """The corpus reader's fail policy: one line naming FILE:LINE, exit 2, no internal error."""
    data = tmp_path / "data.jsonl"
    data.write_bytes(content)
    result = run(["--data", str(data), "-o", str(tmp_path / "out"), *TINY])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"monet-train: {data}:{line}: {reason}"), result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "internal error" not in result.output and "Traceback" not in result.output


def test_plain_text_data_trains(tmp_path):
    """The one reader takes plain text (one document a line) as trace does; eval falls in domain "all"."""
    data = tmp_path / "data.txt"
    rng = random.Random(1)
    data.write_text("".join(" ".join(rng.choice(["the", "cat", "sat", "def", "loop"]) for _ in range(50)) + "\n"
                            for _ in range(30)))
    out = tmp_path / "out"
    result = run(["--data", str(data), "-o", str(out), *TINY, "--arch", "llama"])
    assert result.exit_code == 0, result.output
    metadata = json.loads((out / "training_metadata.json").read_text())
    assert metadata["eval_domains"] == ["all"] and metadata["steps"] == 4


def _torchrun(nproc, out, corpus, arch, *extra, steps=3):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--master_port", str(29500 + random.Random(str(out) + " ".join(extra)).randrange(2000)),
                "-m", "moetools.train"]
    args = ["--data", str(corpus), "-o", str(out), "--arch", arch, *TINY, "--steps", str(steps), *extra]
    completed = subprocess.run([*torchrun, *args], check=False, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [r["loss"] for r in train_log(out) if r["type"] == "train"]


@pytest.mark.slow  # torchrun launches: 6 runs of 1-2 processes
@pytest.mark.parametrize("arch,tolerance", [("llama", 1e-5), ("moe", 1e-3), ("monet-vd", 3e-3)])
def test_torchrun_two_processes_match_one(tmp_path, corpus, arch, tolerance):
    one = _torchrun(1, tmp_path / "one", corpus, arch)
    two = _torchrun(2, tmp_path / "two", corpus, arch)
    assert len(one) == len(two) == 3
    # MONET's BatchNorm routing statistics are per process: equal up to that
    assert max(abs(a - b) for a, b in zip(one, two)) < tolerance, (one, two)


@pytest.mark.slow  # torchrun launches
@pytest.mark.parametrize("arch,tolerance", [("llama", 1e-5), ("moe", 1e-3), ("monet-vd", 3e-3)])
def test_torchrun_fsdp_two_processes_match_one(tmp_path, corpus, arch, tolerance):
    """--fsdp (FSDP2 fully_shard per decoder layer, gloo on CPU) follows one process's loss curve
    as DDP does, and writes the same files: full tensors, the plain model's names."""
    one = _torchrun(1, tmp_path / "one", corpus, arch)
    two = _torchrun(2, tmp_path / "two", corpus, arch, "--fsdp")
    assert len(one) == len(two) == 3
    assert max(abs(a - b) for a, b in zip(one, two)) < tolerance, (one, two)
    from safetensors.torch import load_file

    for name in ("model.safetensors", "checkpoint/model.safetensors", "checkpoint/optimizer.safetensors"):
        plain, sharded = load_file(str(tmp_path / "one" / name)), load_file(str(tmp_path / "two" / name))
        assert sorted(plain) == sorted(sharded), name
        assert all(plain[k].shape == sharded[k].shape and plain[k].dtype == sharded[k].dtype for k in plain), name
    assert (json.loads((tmp_path / "one" / "checkpoint" / "optimizer.json").read_text())
            == json.loads((tmp_path / "two" / "checkpoint" / "optimizer.json").read_text()))
    metadata = json.loads((tmp_path / "two" / "training_metadata.json").read_text())
    assert metadata["parallel"] == "fsdp" and metadata["world_size"] == 2


@pytest.mark.slow  # torchrun launches
def test_torchrun_grad_accum_under_ddp_and_fsdp_matches_one_process(tmp_path, corpus):
    """--grad-accum 2 under torchrun (2 processes x 2 micro-batches of 1) follows one process taking the
    whole batch at once, with DDP and with FSDP."""
    one = _torchrun(1, tmp_path / "one", corpus, "llama")
    for name, extra in (("ddp", ()), ("fsdp", ("--fsdp",))):
        two = _torchrun(2, tmp_path / name, corpus, "llama", "--grad-accum", "2", *extra)
        assert len(two) == 3 and max(abs(a - b) for a, b in zip(one, two)) < 1e-5, (name, one, two)
        assert json.loads((tmp_path / name / "training_metadata.json").read_text())["options"]["grad_accum"] == 2


@pytest.mark.slow  # torchrun launches
def test_torchrun_fsdp_resume_continues_the_loss_curve(tmp_path, corpus):
    """A run stopped at step 3 under --fsdp and resumed (full checkpoint gathered on rank 0, sharded
    back on load) continues exactly as the run that never stopped."""
    straight = _torchrun(2, tmp_path / "straight", corpus, "monet-vd", "--fsdp", steps=6)
    split = tmp_path / "split"
    assert _torchrun(2, split, corpus, "monet-vd", "--fsdp", "--stop-at-step", "3", steps=6) == straight[:3]
    assert json.loads((split / "checkpoint" / "trainer_state.json").read_text())["step"] == 3
    resumed = _torchrun(2, split, corpus, "monet-vd", "--fsdp", "--resume", steps=6)
    assert len(resumed) == len(straight) == 6
    assert resumed == straight  # bit-for-bit, steps 4-6 included (measured: identical)
    from safetensors.torch import load_file
    a, b = load_file(str(tmp_path / "straight" / "model.safetensors")), load_file(str(split / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fsdp_without_torchrun_is_a_usage_error(tmp_path, corpus, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    result = run(["--data", str(corpus), "-o", str(tmp_path / "out"), *TINY, "--fsdp"])
    assert result.exit_code == 2
    assert "--fsdp shards the model over torchrun processes" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_learning_rate_follows_warmup_then_cosine(tmp_path, corpus):
    """The lr logged at every step is linear warmup to --lr, then cosine decay to the end of --steps."""
    import math

    out = tmp_path / "out"
    args = ["--data", str(corpus), "-o", str(out), "--arch", "llama", *TINY, "--steps", "6", "--warmup", "2",
            "--lr", "0.01"]
    result = run(args)
    assert result.exit_code == 0, result.output
    records = [r for r in train_log(out) if r["type"] == "train"]
    logged = [r["lr"] for r in records]
    expected = [0.01 * 1 / 2, 0.01 * 2 / 2] + [0.5 * 0.01 * (1 + math.cos(math.pi * (step - 2) / 4))
                                               for step in range(2, 6)]
    assert logged == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert max(logged) == pytest.approx(0.01) and logged[5] < logged[4] < logged[3] < logged[2]
    assert all(r["grad_norm"] > 0 and math.isfinite(r["grad_norm"]) for r in records)
    assert [r["tokens"] for r in records] == [4 * 24 * step for step in range(1, 7)]  # packed: no padding


def test_grad_accum_follows_the_whole_batch(tmp_path, corpus):
    """--grad-accum 2 (two micro-batches of 2 per step) takes the steps of --batch-size 4 in one pass: the
    dense baseline's losses agree to float rounding; its log and metadata say so."""
    whole = run(["--data", str(corpus), "-o", str(tmp_path / "whole"), "--arch", "llama", *TINY])
    split = run(["--data", str(corpus), "-o", str(tmp_path / "split"), "--arch", "llama", *TINY, "--grad-accum", "2"])
    assert whole.exit_code == 0 and split.exit_code == 0, split.output
    a, b = ([r for r in train_log(tmp_path / run_dir) if r["type"] in ("train", "eval")] for run_dir in ("whole", "split"))
    assert [r["type"] for r in a] == [r["type"] for r in b] and len(a) == 6
    for x, y in zip(a, b):
        key = "loss" if x["type"] == "train" else "eval_loss"
        assert x[key] == pytest.approx(y[key], abs=1e-5)
    metadata = json.loads((tmp_path / "split" / "training_metadata.json").read_text())
    assert metadata["options"]["grad_accum"] == 2 and metadata["tokens"] == 4 * 4 * 24


def test_grad_accum_must_divide_the_batch(tmp_path, corpus):
    result = run(["--data", str(corpus), "-o", str(tmp_path / "out"), *TINY, "--grad-accum", "3"])
    assert result.exit_code == 2 and "--batch-size 4 is not divisible by 1 processes x --grad-accum 3" in result.output
    assert not (tmp_path / "out").exists()
