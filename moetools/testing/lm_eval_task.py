"""A local lm-evaluation-harness multiple-choice task (a task YAML over a JSON-lines file, offline) that
tests point ``lm_eval --include_path`` at: each item is ``{"question", "choices", "answer"}``."""

from __future__ import annotations

from pathlib import Path

TASK = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
{metrics}"""


def write_choice_task(path: Path, name: str, items: Path, metrics=("acc",)) -> Path:
    """Write the task YAML ``path`` named ``name`` over the JSON-lines ``items``; returns ``path``."""
    Path(path).write_text(TASK.format(name=name, items=items,
                                      metrics="".join(f"  - metric: {metric}\n" for metric in metrics)))
    return Path(path)
