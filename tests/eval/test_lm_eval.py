"""lm-evaluation-harness loads a moe-mask directory (``--model hf``) and scores a local multiple-choice
task (a task YAML over a JSON-lines file, offline) with the same acc / acc_norm as moe-eval."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner

from moetools.cli.eval import command as eval_command
from moetools.cli.mask import command as mask_command
from moetools.streams import StreamReader
from moetools.testing.lm_eval_task import write_choice_task
from tests.tiny_models import save_tiny_olmoe

lm_eval = pytest.importorskip("lm_eval")

WORDS = [f"w{i}" for i in range(40)]


@pytest.mark.slow
@pytest.mark.parametrize("experts, mode", [({"0": [1, 4], "1": [0, 6]}, "pruned"), ({"0": [1, 4, 5], "1": [6]}, "remote")])
def test_lm_eval_on_masked_directory_agrees_with_moe_eval(tmp_path, monkeypatch, experts, mode):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    save_tiny_olmoe(tmp_path / "base", WORDS)
    (tmp_path / "experts.json").write_text(json.dumps({"experts": experts}))
    result = CliRunner().invoke(mask_command, [str(tmp_path / "base"), "--experts", str(tmp_path / "experts.json"),
                                               "-o", str(tmp_path / "masked")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "masked" / "config.json").read_text())["moe_mask"]["mode"] == mode
    items = tmp_path / "items.jsonl"
    rows = [{"question": " ".join(WORDS[i:i + 3]), "choices": [WORDS[(i * 7 + j) % 40] + " " + WORDS[j]
                                                             for j in range(2 + i % 3)], "answer": i % 2}
            for i in range(12)]
    items.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_choice_task(tasks / "local.yaml", "moetools_local_choices", items, ("acc", "acc_norm"))

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    output = simple_evaluate(model="hf", model_args=f"pretrained={tmp_path / 'masked'},dtype=float32,prefix_token_id=1,"
                                        f"trust_remote_code={mode == 'remote'}",
                             tasks=["moetools_local_choices"], task_manager=TaskManager(include_path=str(tasks)),
                             num_fewshot=0, batch_size=1, device="cpu")
    theirs = output["results"]["moetools_local_choices"]

    result = CliRunner().invoke(eval_command, [str(tmp_path / "masked"), "--choices", str(items)])
    assert result.exit_code == 0, result.output
    (mine,) = [r for r in StreamReader(io.BytesIO(result.stdout_bytes), validate=True) if r["type"] == "choice"]
    assert mine["items"] == 12
    assert mine["acc"] == pytest.approx(theirs["acc,none"])
    assert mine["acc_norm"] == pytest.approx(theirs["acc_norm,none"])
