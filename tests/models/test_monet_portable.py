"""The MONET directories moetools writes load where moetools is not installed: monet-train's output
and a merged MONET adapter carry configuration_monet.py, modeling_monet.py and an auto_map (as the
published MONET checkpoints do). In a Python where ``import moetools`` fails, transformers loads them
with ``trust_remote_code=True`` (same logits as moetools' own loader, which uses no remote code),
refuses them without it, and lm-evaluation-harness scores a local task on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from moetools.cli.monet_train import command as train_command
from moetools.cli.tune import command as tune_command
from moetools.models.loader import load_model
from moetools.models.monet.shipped import AUTO_MAP, FILES, is_shipped, shipped_files
from moetools.testing.lm_eval_task import write_choice_task
from tests.train.test_monet_train import TINY, corpus  # noqa: F401 - corpus: the fixture
from tests.tune.test_tune import GENERAL, MEDICAL, write_corpus

# runs in a fresh interpreter with moetools made unimportable
WITHOUT_MOETOOLS = textwrap.dedent("""
    import json, sys
    sys.modules["moetools"] = None  # any import of moetools fails
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM
    directories, input_ids, out, tasks = (json.loads(sys.argv[1]), torch.tensor(json.loads(sys.argv[2])),
                                          sys.argv[3], sys.argv[4])
    logits, refusals, scores = {}, {}, {}
    for name, path in directories.items():
        try:
            AutoModelForCausalLM.from_pretrained(path)
        except ValueError as error:
            refusals[name] = str(error)
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, dtype=torch.float32).eval()
        with torch.no_grad():
            logits[name] = model(input_ids).logits.contiguous()
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager
        output = simple_evaluate(model="hf", model_args=f"pretrained={path},dtype=float32,trust_remote_code=True",
                                 tasks=["moetools_monet_choices"], task_manager=TaskManager(include_path=tasks),
                                 num_fewshot=0, batch_size=1, device="cpu")
        scores[name] = output["results"]["moetools_monet_choices"]["acc,none"]
    save_file(logits, out)
    json.dump({"refusals": refusals, "scores": scores, "class": type(model).__module__,
               "moetools_imported": any(m.startswith("moetools") for m in sys.modules if sys.modules[m])},
              open(out + ".json", "w"))
""")


def _train_and_merge(root: Path, corpus_path: Path) -> dict[str, Path]:
    trained = root / "trained"
    result = CliRunner().invoke(train_command, ["--data", str(corpus_path), "-o", str(trained), "--arch", "monet-vd",
                                                *TINY])
    assert result.exit_code == 0, result.output
    data = write_corpus(root / "medical.jsonl", MEDICAL, domain="medical")
    write_corpus(root / "general.jsonl", GENERAL, seed=1, domain="general")
    (root / "experts.json").write_text(json.dumps({"experts": {"1": [1, 6]}}))
    result = CliRunner().invoke(tune_command, [str(trained), "--data", str(data), "-o", str(root / "adapter"),
                                               "--experts", str(root / "experts.json"), "--steps", "2",
                                               "--batch-size", "2", "--seq-len", "12", "--lr", "0.05", "-q"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(tune_command, ["merge", str(root / "adapter"), "-o", str(root / "merged")])
    assert result.exit_code == 0, result.output
    return {"trained": trained, "merged": root / "merged"}


@pytest.mark.slow
def test_monet_directories_load_without_moetools(tmp_path, corpus):  # noqa: F811 - the fixture
    directories = _train_and_merge(tmp_path, corpus)
    for path in directories.values():
        assert is_shipped(path)
        assert json.loads((path / "config.json").read_text())["auto_map"] == AUTO_MAP
        for name, data in shipped_files().items():
            assert (path / name).read_bytes() == data
        assert set(FILES) <= {p.name for p in path.glob("*.py")}
    items = tmp_path / "items.jsonl"
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "def", "loop", "return"]
    items.write_text("".join(json.dumps({"question": " ".join(words[i % 5:i % 5 + 3]),
                                         "choices": [words[(i + j) % 10] for j in range(3)], "answer": i % 3}) + "\n"
                             for i in range(6)))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_choice_task(tasks / "local.yaml", "moetools_monet_choices", items, ("acc",))
    input_ids = [[2, 5, 9, 14, 3, 7], [4, 4, 8, 1, 11, 6]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": "",
           "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    out = tmp_path / "logits.safetensors"
    done = subprocess.run([sys.executable, "-c", WITHOUT_MOETOOLS, json.dumps({k: str(v) for k, v in
                                                                                 directories.items()}),
                           json.dumps(input_ids), str(out), str(tasks)], check=False, env=env, cwd=tmp_path,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(Path(str(out) + ".json").read_text())
    assert not report["moetools_imported"]
    assert report["class"].startswith("transformers_modules"), report["class"]  # the directory's own code ran
    for name in directories:  # without trust_remote_code: transformers' own refusal, never a silent load
        assert "trust_remote_code=True" in report["refusals"][name], report["refusals"]
        assert 0.0 <= report["scores"][name] <= 1.0
    theirs = load_file(str(out))
    for name, path in directories.items():  # moetools loads the same directory without remote code
        model = load_model(path, tokenizer=False, dtype="float32").model
        assert type(model).__module__ == "moetools.models.monet.modeling_monet"
        with torch.no_grad():
            mine = model(torch.tensor(input_ids)).logits
        torch.testing.assert_close(theirs[name], mine, rtol=1e-5, atol=1e-5)


def test_moe_mask_ships_the_same_monet_files(tmp_path):
    """moe-mask's remote-mode MONET directories carry the very bytes monet-train and merge write, so the
    check that trusts only moetools' own code accepts both."""
    from moetools.mask.remote import write_code

    write_code(tmp_path, "monet")
    for name, data in shipped_files().items():
        assert (tmp_path / name).read_bytes() == data
