"""moe-tune on tiny real models of every family and MONET: what must not change does not, bit for bit."""

from __future__ import annotations

import json
import random

import pytest
import torch
import transformers
from click.testing import CliRunner

from moetools.cli.tune import command
from moetools.models import model_identity
from moetools.models.loader import load_model
from moetools.streams.outputs import MARKER
from moetools.tune import TuneOptions, merge
from moetools.tune.data import IGNORE, chat_example
from moetools.tune.loop import Tuner
from moetools.tune.slices import experts_view
from tests.models.test_adapters import FAMILIES, tiny_model
from tests.models.test_monet_model import tiny_config as tiny_monet_config
from tests.tiny_models import save_word_tokenizer

WORDS = ["the", "a", "of", "cat", "dog", "sat", "on", "mat", "pain", "fever", "cough", "doctor", "dose", "court", "law", "judge", "appeal", "code", "loop", "def"]
MEDICAL, GENERAL = WORDS[8:13] + WORDS[:3], WORDS[:8] + WORDS[13:]


def write_corpus(path, words, lines=24, seed=0, domain=None):
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"text": " ".join(rng.choice(words) for _ in range(18)),
                                     "domain": domain or "all"}) + "\n" for _ in range(lines))
    return path


def save_model(directory, family: str):
    if family == "monet":
        from moetools.models.monet import MonetForCausalLM

        torch.manual_seed(0)
        model = MonetForCausalLM(tiny_monet_config(vocab_size=64, pad_token_id=1, bos_token_id=None,
                                                   eos_token_id=None))
    else:
        model = tiny_model(family)
        model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id = 1, None, None
    model.save_pretrained(directory)
    save_word_tokenizer(directory, WORDS)
    return directory


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune-data")
    return {"medical": write_corpus(root / "medical.jsonl", MEDICAL, domain="medical"),
            "general": write_corpus(root / "general.jsonl", GENERAL, seed=1, domain="general")}


@pytest.fixture(scope="module")
def olmoe(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("olmoe"), "olmoe")


def options(model, data, out, **extra):
    values = {"model": str(model), "data": str(data["medical"]), "output": str(out), "steps": 3, "batch_size": 4,
              "seq_len": 12, "lr": 5e-2, "eval_every": 2, "checkpoint_every": 2, "warmup": 0,
              "eval": [str(data["medical"]), str(data["general"])]}
    values.update(extra)
    return TuneOptions(**values)


def write_experts(path, chosen, identity=None):
    body = {"experts": {str(k): v for k, v in chosen.items()}}
    if identity is not None:
        body["moetools"] = {"version": 1, "model": identity}
    path.write_text(json.dumps(body))
    return path


def base_state(model_dir):
    return {k: v.clone() for k, v in load_model(model_dir, dtype="float32", tokenizer=False).model.state_dict().items()}


def check_only_selected_changed(tuner, before):
    """Every tensor but the selected slices is bit-identical; the selected slices moved (a selected expert
    no token was routed to in these few steps gets zero gradients and may stay put)."""
    after = tuner.model.state_dict()
    slices = {piece.name: piece for piece in tuner.module.slices.slices if tuner.module.slices.trained(piece)}
    assert slices
    moved = []
    for name, tensor in before.items():
        if name not in slices:
            assert torch.equal(after[name], tensor), name
            continue
        piece = slices[name]
        old, new = (experts_view(t, piece.dim, piece.block, piece.num) for t in (tensor, after[name]))
        for expert in range(piece.num):
            if expert not in piece.ids:
                assert torch.equal(old[expert], new[expert]), (name, expert)
        moved.append(any(not torch.equal(old[e], new[e]) for e in piece.ids))
    assert any(moved)


@pytest.mark.parametrize("family", [*FAMILIES, "monet"])
def test_experts_mode_changes_only_the_selected_slices(tmp_path, data, family):
    model_dir = save_model(tmp_path / "model", family)
    before = base_state(model_dir)
    last = max(before_key_layers(model_dir))
    experts = write_experts(tmp_path / "experts.json", {last: [1, 6] if family == "monet" else [1, 5]})
    tuner = Tuner(options(model_dir, data, tmp_path / "out", mode="experts", experts=str(experts), steps=2,
                          eval=[]))
    tuner.run()
    check_only_selected_changed(tuner, before)
    # merge == the in-memory tuned model, and the merged directory loads with vanilla transformers
    merge(tmp_path / "out", tmp_path / "merged")
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged") if family != "monet" else \
        load_model(tmp_path / "merged", tokenizer=False).model
    for name, tensor in tuner.model.state_dict().items():
        assert torch.equal(merged.state_dict()[name], tensor), name
    assert merged.config.moetools_tuned["mode"] == "experts"


def before_key_layers(model_dir):
    loaded = load_model(model_dir, tokenizer=False)
    return [layer.index for layer in loaded.adapter.moe_layers()]


@pytest.mark.parametrize("family", ["gpt_oss", "deepseek_v3", "monet"])
def test_lora_experts_on_other_layouts_touches_only_the_selected_experts(tmp_path, data, family):
    """GPT-OSS's transposed fused tensors with biases, DeepSeek-V3's shared experts, MONET's factor blocks."""
    model_dir = save_model(tmp_path / "model", family)
    before = base_state(model_dir)
    last = max(before_key_layers(model_dir))
    experts = write_experts(tmp_path / "experts.json", {last: [1, 6] if family == "monet" else [1, 5]})
    tuner = Tuner(options(model_dir, data, tmp_path / "out", mode="lora-experts", experts=str(experts), steps=2,
                          eval=[]))
    tuner.run()
    check_only_selected_changed(tuner, before)


def test_lora_experts_touches_only_the_selected_experts(tmp_path, data, olmoe):
    before = base_state(olmoe)
    experts = write_experts(tmp_path / "experts.json", {0: [2], 1: [3, 7]})
    tuner = Tuner(options(olmoe, data, tmp_path / "out", mode="lora-experts", experts=str(experts), eval=[]))
    summary = tuner.run()
    check_only_selected_changed(tuner, before)
    # 2 fused tensors x 3 experts x r (rows + cols): (96 + 32) * 16 + (32 + 48) * 16 per expert
    assert summary["trainable_parameters"] == 3 * ((96 + 32) * 16 + (32 + 48) * 16)
    merge(tmp_path / "out", tmp_path / "merged")
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    ids = torch.randint(2, 22, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tuner.module.eval()
        expected = tuner.module(input_ids=ids).logits
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-5)


def test_optimizer_state_grows_with_selected_experts(tmp_path, data, olmoe):
    sizes = {}
    for count in (1, 2, 4):
        experts = write_experts(tmp_path / f"e{count}.json", {1: list(range(count))})
        tuner = Tuner(options(olmoe, data, tmp_path / f"out{count}", mode="experts", experts=str(experts), steps=1,
                              eval=[]))
        tuner.run()
        state = tuner.optimizer.state_dict()["state"]
        sizes[count] = sum(t.numel() for values in state.values() for t in values.values()
                           if isinstance(t, torch.Tensor) and t.ndim > 0)
        assert sizes[count] == 2 * count * (96 * 32 + 32 * 48)  # exp_avg + exp_avg_sq of the slices only
    assert sizes[4] == 2 * sizes[2] == 4 * sizes[1]


@pytest.mark.parametrize("family", ["olmoe", "gpt_oss"])
def test_selected_experts_get_the_fused_tensors_gradient_rows(tmp_path, data, family):
    """experts mode runs the family's per-expert forward (no full-size gradient, activations recomputed):
    each selected expert's gradient is its row of the gradient the fused tensor gets in a plain backward
    pass, an expert no token reached gets zeros, and the frozen tensors get no gradient at all."""
    model_dir = save_model(tmp_path / "model", family)
    chosen = {0: [0, 1, 3], 1: [2]}
    experts = write_experts(tmp_path / "experts.json", chosen)
    tuner = Tuner(options(model_dir, data, tmp_path / "out", mode="experts", experts=str(experts), eval=[]))
    tuner.enter_stage(0)
    loss, _, rows = tuner._step(0)
    pieces = [piece for piece in tuner.module.slices.slices if tuner.module.slices.aliases(piece)]
    assert pieces and all("forward" in vars(piece.owner) for piece in pieces)  # the per-expert forward runs
    assert all(piece.base.grad is None for piece in pieces)

    reference = load_model(model_dir, dtype="float32", tokenizer=False).model
    reference.train()
    named = dict(reference.named_parameters())
    for name, parameter in named.items():
        parameter.requires_grad_(any(name == piece.name for piece in pieces))
    part = tuner.train_set.rows(rows)
    plain_loss, plain_sum = tuner._loss(reference, (part.input_ids, part.labels, part.attention_mask),
                                        tuner.train_set.label_tokens(rows), 1.0)
    assert loss == plain_sum / tuner.train_set.label_tokens(rows)  # the same forward, bit for bit
    plain_loss.backward()
    for piece in pieces:
        full = experts_view(named[piece.name].grad, piece.dim, piece.block, piece.num)
        for expert, parameter in zip(piece.ids, tuner.module.slices.aliases(piece)):
            assert torch.allclose(parameter.grad, full[expert], atol=1e-6, rtol=1e-4), (piece.name, expert)
    assert any(parameter.grad.abs().sum() > 0 for piece in pieces for parameter in tuner.module.slices.aliases(piece))


@pytest.mark.parametrize("mode", ["attention-router", "full"])
def test_whole_parameter_modes_freeze_the_rest(tmp_path, data, olmoe, mode):
    before = base_state(olmoe)
    tuner = Tuner(options(olmoe, data, tmp_path / "out", mode=mode, eval=[]))
    tuner.run()
    trained = {name[len("model."):] for name, _ in tuner.trainable}
    for name, tensor in tuner.model.state_dict().items():
        if name not in trained:
            assert torch.equal(tensor, before[name]), name
    if mode == "attention-router":
        assert trained and all(".self_attn." in n or n.endswith("mlp.gate.weight") for n in trained)


def _losses(out):
    """The log without wall-clock times."""
    records = [json.loads(line) for line in (out / "tune_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in records]


@pytest.mark.parametrize("mode,extra", [("experts", {}), ("das-two-stage", {"stage1_steps": 2, "top": 2}),
                                        ("lora", {})])
def test_resume_is_bit_exact(tmp_path, data, olmoe, mode, extra):
    experts = write_experts(tmp_path / "experts.json", {0: [0, 3], 1: [5]})
    common = {"mode": mode, "experts": str(experts), "general": str(data["general"]), "steps": 3, "das_rows": 8,
              **extra}
    straight = Tuner(options(olmoe, data, tmp_path / "straight", **common))
    straight.run()
    Tuner(options(olmoe, data, tmp_path / "split", stop_at_step=3 if mode == "das-two-stage" else 2,
                  **common)).run()
    resumed = Tuner(options(olmoe, data, tmp_path / "split", resume=True, **common))
    resumed.run()
    # the split run also evaluates where it stopped: compare the training records
    trained = [[r for r in _losses(tmp_path / run) if r["type"] == "train"] for run in ("straight", "split")]
    assert len(trained[0]) == 5 if mode == "das-two-stage" else 3
    assert trained[0] == trained[1]
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name


def test_das_two_stage_logs_cdas_and_writes_the_chosen_set(tmp_path, data, olmoe):
    out = tmp_path / "out"
    tuner = Tuner(options(olmoe, data, out, mode="das-two-stage", general=str(data["general"]), stage1_steps=2,
                          top=3, stage2="lora-experts", das_rows=8))
    summary = tuner.run()
    cdas = [r for r in _losses(out) if r["type"] == "cdas"]
    assert [r["step"] for r in cdas] == [0, 2] and all(0 < r["cdas"] <= 2 for r in cdas)  # 2 layers
    chosen = json.loads((out / "experts.json").read_text())
    assert {k: len(v) for k, v in chosen["experts"].items()} == {"0": 3, "1": 3}
    assert chosen["moetools"]["criterion"]["by"] == "das"
    meta = json.loads((out / "tune.json").read_text())
    assert meta["stages"][0]["kind"] == "attention-router" and meta["lora"]["rank"] == 16
    assert summary["finished"]
    merge(out, tmp_path / "merged")  # stage-1 weights and LoRA on the chosen experts together
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    ids = torch.randint(2, 22, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tuner.module.eval()
        assert torch.allclose(merged(input_ids=ids).logits, tuner.module(input_ids=ids).logits, atol=1e-5)


def test_lora_adapter_is_peft_loadable_and_merges(tmp_path, data, olmoe):
    from peft import PeftModel

    out = tmp_path / "out"
    tuner = Tuner(options(olmoe, data, out, mode="lora", eval=[]))
    tuner.run()
    ids = torch.randint(2, 22, (2, 10), generator=torch.Generator().manual_seed(0))
    tuner.module.eval()
    with torch.no_grad():
        expected = tuner.module(input_ids=ids).logits
        base = transformers.AutoModelForCausalLM.from_pretrained(olmoe)
        assert not torch.allclose(base(input_ids=ids).logits, expected, atol=1e-4)
        loaded = PeftModel.from_pretrained(base, str(out))
        assert torch.allclose(loaded(input_ids=ids).logits, expected, atol=1e-5)
    merge(out, tmp_path / "merged")
    with torch.no_grad():
        merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-5)
    base_loaded = load_model(olmoe)
    base_identity = model_identity(base_loaded.model, base_loaded.adapter, olmoe)
    merged_loaded = load_model(tmp_path / "merged")
    assert model_identity(merged_loaded.model, merged_loaded.adapter, tmp_path / "merged")["fingerprint"] != \
        base_identity["fingerprint"]


def test_chat_loss_only_on_assistant_tokens(tmp_path):
    save_word_tokenizer(tmp_path, [*WORDS, "user", "assistant", ":", ";"])
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} ; {% endfor %}"
                               "{% if add_generation_prompt %}assistant : {% endif %}")
    messages = [{"role": "user", "content": "cat sat"}, {"role": "assistant", "content": "dog pain"},
                {"role": "user", "content": "law"}, {"role": "assistant", "content": "court judge"}]
    ids, labels = chat_example(tokenizer, messages)
    kept = [tokenizer.convert_ids_to_tokens(i) for i, label in zip(ids, labels) if label != IGNORE]
    assert kept == ["dog", "pain", ";", "court", "judge", ";"]


def run_cli(args):
    return CliRunner().invoke(command, [str(a) for a in args])


def test_bad_inputs_exit_2(tmp_path, data, olmoe):
    base = [olmoe, "--data", data["medical"], "-o", tmp_path / "out", "--steps", "1", "--seq-len", "8"]
    result = run_cli([*base, "--mode", "nonsense"])
    assert result.exit_code == 2 and "--mode" in result.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = run_cli([olmoe, "--data", empty, "-o", tmp_path / "out", "--mode", "full"])
    assert result.exit_code == 3 and f"{empty}: empty input: no documents" in result.output
    other = write_experts(tmp_path / "other.json", {1: [1]},
                          {"name": "other", "fingerprint": "sha256:" + "0" * 64, "num_experts": 8,
                           "moe_layers": [0, 1]})
    result = run_cli([*base, "--experts", other])
    assert result.exit_code == 2 and "refusing" in result.output
    wide = write_experts(tmp_path / "wide.json", {1: [8]})
    result = run_cli([*base, "--experts", wide])
    assert result.exit_code == 2 and "8" in result.output
    result = run_cli([*base, "--mode", "experts"])
    assert result.exit_code == 2 and "--experts" in result.output
    result = run_cli(["merge", tmp_path / "nothing", "-o", tmp_path / "m"])
    assert result.exit_code == 2 and "not a moe-tune adapter" in result.output


def _torchrun(nproc, out, args):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    port = 29500 + random.Random(str(out)).randrange(2000)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
              str(port), "-m", "moetools.tune"]
    completed = subprocess.run([*launch, *map(str, args), "-o", str(out), "-q"], check=False, env=env,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [r for r in _losses(out) if r["type"] == "train"]


@pytest.mark.slow  # 4 torchrun launches
@pytest.mark.parametrize("mode", ["experts", "das-two-stage"])
def test_torchrun_two_processes_match_one(tmp_path, data, olmoe, mode):
    from safetensors.torch import load_file

    experts = write_experts(tmp_path / "experts.json", {0: [0, 3], 1: [5]})
    args = [olmoe, "--data", data["medical"], "--mode", mode, "--experts", experts, "--general", data["general"],
            "--stage1-steps", "2", "--top", "2", "--das-rows", "8", "--steps", "3", "--batch-size", "4",
            "--seq-len", "12", "--lr", "0.05"]
    one, two = _torchrun(1, tmp_path / "one", args), _torchrun(2, tmp_path / "two", args)
    assert len(one) == len(two) == (5 if mode == "das-two-stage" else 3)
    for a, b in zip(one, two):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    if mode == "das-two-stage":
        chosen = [json.loads((tmp_path / run / "experts.json").read_text()) for run in ("one", "two")]
        assert chosen[0]["experts"] == chosen[1]["experts"]  # the DAS values agree to float noise
    first, second = (load_file(str(tmp_path / run / "adapter.safetensors")) for run in ("one", "two"))
    assert first.keys() == second.keys()
    for name in first:
        # Adam divides by sqrt(v): components whose gradient is ~0 amplify the all-reduce's rounding
        assert torch.allclose(first[name], second[name], atol=1e-4), name


@pytest.mark.slow  # 3 torchrun launches
def test_torchrun_fsdp_matches_ddp_and_one_process(tmp_path, data, olmoe):
    """--fsdp (FSDP2 per decoder layer, gloo on CPU) follows one process and DDP: the same train and eval
    losses to 1e-5, and the same adapter (full tensors, the plain model's names)."""
    from safetensors.torch import load_file

    args = [olmoe, "--data", data["medical"], "--eval", data["general"], "--mode", "full", "--steps", "3",
            "--batch-size", "4", "--seq-len", "12", "--lr", "0.05", "--eval-every", "2", "--checkpoint-every", "2"]
    runs = {"one": _torchrun(1, tmp_path / "one", args), "ddp": _torchrun(2, tmp_path / "ddp", args),
            "fsdp": _torchrun(2, tmp_path / "fsdp", [*args, "--fsdp"])}
    assert all(len(losses) == 3 for losses in runs.values())
    for other in ("ddp", "fsdp"):
        for a, b in zip(runs["one"], runs[other]):
            assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), other
        evals = [[r["eval_loss"] for r in _losses(tmp_path / name) if r["type"] == "eval"] for name in ("one", other)]
        assert len(evals[0]) == 2 and evals[0] == pytest.approx(evals[1], abs=1e-5), other
    plain, sharded = (load_file(str(tmp_path / name / "adapter.safetensors")) for name in ("one", "fsdp"))
    assert sorted(plain) == sorted(sharded) and all(k.startswith("full.") for k in plain)
    for name in plain:
        assert torch.allclose(plain[name], sharded[name], atol=1e-4), name
    checkpoint = load_file(str(tmp_path / "fsdp" / "checkpoint" / "model.safetensors"))
    assert sorted(checkpoint) == sorted(load_file(str(tmp_path / "one" / "checkpoint" / "model.safetensors")))
    meta = json.loads((tmp_path / "fsdp" / "tune.json").read_text())
    assert meta["options"]["fsdp"] is True and meta["summary"]["world_size"] == 2


@pytest.mark.slow  # 3 torchrun launches
def test_torchrun_fsdp_resume_continues_exactly(tmp_path, data, olmoe):
    """Under --fsdp a run stopped at step 2 (checkpoint gathered whole on rank 0) and resumed (sharded back)
    logs the same losses and writes the same adapter as the run that never stopped."""
    from safetensors.torch import load_file

    args = [olmoe, "--data", data["medical"], "--mode", "attention-router", "--steps", "4", "--batch-size", "4",
            "--seq-len", "12", "--lr", "0.05", "--checkpoint-every", "10", "--fsdp"]
    straight = _torchrun(2, tmp_path / "straight", args)
    assert len(_torchrun(2, tmp_path / "split", [*args, "--stop-at-step", "2"])) == 2
    resumed = _torchrun(2, tmp_path / "split", [*args, "--resume"])
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]
    a, b = (load_file(str(tmp_path / name / "adapter.safetensors")) for name in ("straight", "split"))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_fsdp_refusals(tmp_path, data, olmoe, monkeypatch):
    """--fsdp needs torchrun (2+ processes) and a mode that trains whole parameters: one line, exit 2."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    base = [olmoe, "--data", data["medical"], "--steps", "1", "--batch-size", "4", "--seq-len", "12"]
    result = run_cli([*base, "--mode", "full", "--fsdp", "-o", tmp_path / "a"])
    assert result.exit_code == 2 and "--fsdp shards the model over torchrun processes" in result.output
    experts = write_experts(tmp_path / "experts.json", {0: [1]})
    result = run_cli([*base, "--mode", "experts", "--experts", experts, "--fsdp", "-o", tmp_path / "b"])
    assert result.exit_code == 2 and "--fsdp shards whole parameters: --mode full or attention-router" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_trains_with_several_eval_files_and_merges(tmp_path, data, olmoe):
    experts = write_experts(tmp_path / "experts.json", {1: [2, 4]})
    result = run_cli([olmoe, "--data", data["medical"], "--eval", data["medical"], data["general"], "--mode",
                      "experts", "--experts", experts, "-o", tmp_path / "out", "--steps", "2", "--seq-len", "12",
                      "--batch-size", "4", "--eval-every", "1"])
    assert result.exit_code == 0, result.output
    evals = [r for r in _losses(tmp_path / "out") if r["type"] == "eval"]
    assert len(evals) == 2 and set(evals[0]["eval_loss_by_file"]) == {"medical", "general"}
    assert set(evals[0]["eval_loss_by_domain"]) == {"medical", "general"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        MARKER, "adapter.safetensors", "experts.json", "tune.json", "tune_log.jsonl"]  # no checkpoint after 2 steps
    result = run_cli(["merge", tmp_path / "out", "-o", tmp_path / "merged"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["moetools_tuned"]["mode"] == "experts"
