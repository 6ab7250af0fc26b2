"""The demo's models trained to their step budget, whatever the load.

Each model trains ``--steps`` steps (monet-train): a busy machine takes longer, it does not get a
less-trained model. While it trains, the demo reads the first :data:`PROBE_STEPS` steps from its log,
says how long the rest will take beside the time measured on 2 idle cores (``Recipe.idle_step_seconds``),
and when the machine is much slower says so and how to shorten it (``--steps``). A user may still cap the time
(``--max-minutes``); a model that stopped short of its budget is named by :func:`training_shortfall`,
which the summary's verdict carries.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from pathlib import Path

PROBE_STEPS = 5      # steps timed for the estimate (the first one, with its warm-up, is not counted)
SLOW_FACTOR = 2.0    # slower than this x the idle-core time per step: said, with a shorter --steps


def model_is_complete(directory: Path) -> bool:
    """monet-train writes the weights and training_metadata.json last: both present = finished (or stopped)."""
    return (directory / "model.safetensors").is_file() and (directory / "training_metadata.json").is_file()


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def recipe_matches(recipe, directory: Path) -> bool:
    """False when the model (or its checkpoint) was made with other values of ``recipe.model_config``."""
    settings = _read_json(directory / "config.json")
    if settings is None:
        state = _read_json(directory / "checkpoint" / "trainer_state.json")
        if state is None:
            return True  # nothing readable to compare: monet-train itself refuses a bad checkpoint
        settings = (state.get("options") or {}).get("model_settings") or {}
    return all(settings.get(key) == value for key, value in recipe.model_config.items())


def planned_steps(directory: Path) -> int | None:
    """The step budget the model (or its checkpoint) was trained for; None when nothing says."""
    metadata = _read_json(directory / "training_metadata.json") or {}
    if isinstance(metadata.get("steps_planned"), int):
        return metadata["steps_planned"]
    state = _read_json(directory / "checkpoint" / "trainer_state.json") or {}
    steps = (state.get("options") or {}).get("steps")
    return steps if isinstance(steps, int) else None


def training_shortfall(directory: Path) -> str | None:
    """None when the model trained its whole budget; else what it did and why it stopped, for the verdict."""
    metadata = _read_json(Path(directory) / "training_metadata.json")
    if not metadata or metadata.get("finished", True):
        return None
    options = metadata.get("options") or {}
    steps = metadata.get("steps")
    if options.get("stop_at_step") is not None and isinstance(steps, int) and steps >= options["stop_at_step"]:
        why = f"stopped by --stop-at-step {options['stop_at_step']}"
    elif options.get("max_minutes") is not None:
        why = f"stopped by --max-minutes {options['max_minutes']:g}"
    else:
        why = "stopped before its budget"
    return f"trained {steps} of {metadata.get('steps_planned')} steps, {why}"


class FirstStepsEstimate:
    """Watches a running monet-train's log (``train_log.jsonl``, one record per step, flushed): once
    :data:`PROBE_STEPS` steps past ``start_step`` are logged, logs once what they say about the rest
    (:func:`estimate_lines`). Records older than the run (a killed run's, cut back on resume) are skipped."""

    def __init__(self, recipe, log_path: Path, steps: int, start_step: int, log):
        self.recipe, self.log_path, self.steps, self.start_step, self.log = recipe, log_path, steps, start_step, log
        self.launched = time.time()
        self.done = steps - start_step <= PROBE_STEPS  # nothing left to estimate after the first steps

    def __call__(self) -> None:
        if self.done:
            return
        points = self._points()
        if len(points) < 2 or points[-1][0] < self.start_step + PROBE_STEPS:
            return
        self.done = True
        (first_step, first_time), (last_step, last_time) = points[0], points[-1]
        per_step = (last_time - first_time) / (last_step - first_step)
        for line in estimate_lines(self.recipe.name, per_step, (first_step + 1, last_step), self.steps,
                                   self.recipe.idle_step_seconds):
            self.log(line)

    def _points(self) -> list[tuple[int, float]]:
        """(step, elapsed_s) of this run's first steps: the time between the first's end and the last's."""
        points = []
        try:
            if self.log_path.stat().st_mtime < self.launched - 1:
                return []  # not yet this run's log
            with open(self.log_path, encoding="utf-8") as handle:
                for line in handle:
                    record = json.loads(line)
                    step = record.get("step")
                    if record.get("type") == "train" and self.start_step < step <= self.start_step + PROBE_STEPS:
                        points.append((step, float(record["elapsed_s"])))
        except (OSError, ValueError, KeyError, TypeError):
            return []  # not there yet, or a line being written: the next call sees it
        return points


def estimate_lines(name: str, per_step: float, timed: tuple[int, int], steps: int,
                   idle_per_step: float | None) -> list[str]:
    """What the steps ``timed`` (first, last) say about the rest: the time left, beside 2 idle cores; how to
    shorten it."""
    left = steps - timed[1]
    lines = [f"model {name}: {per_step:.2f} s/step (steps {timed[0]}-{timed[1]}): about "
             f"{_minutes(per_step * left)} for the other {left} of {steps} steps"
             + (f" (2 idle cores: {idle_per_step:.2f} s/step, {_minutes(idle_per_step * steps)} in all)"
                if idle_per_step else "")]
    if idle_per_step and per_step > SLOW_FACTOR * idle_per_step:
        shorter = max(PROBE_STEPS + 1, int(steps * idle_per_step / per_step) // 10 * 10)
        lines.append(f"model {name}: this machine is {per_step / idle_per_step:.1f}x slower than 2 idle cores (busy?); "
                     f"the demo still trains all {steps} steps. To shorten it, stop it (Ctrl-C) and run it again "
                     f"with `--steps {shorter}` (about the idle-core time; fewer steps train a weaker model, which "
                     f"trains again from the start)")
    return lines


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def train_to_budget(recipe, corpus: Path, directory: Path, steps: int, max_minutes: float | None, run_shell,
                    log) -> Path:
    """``directory`` trained with monet-train to ``steps`` unless it already is.

    Cached when complete with that budget; another recipe's or another budget's model trains again;
    a killed run, or one an earlier ``--max-minutes`` stopped, resumes from its checkpoint.
    """
    if directory.is_dir():
        budget = planned_steps(directory)
        why = ("was trained with another recipe" if not recipe_matches(recipe, directory) else
               f"was trained for a budget of {budget} steps, not {steps}" if budget not in (None, steps) else None)
        if why:  # an older demo's model (e.g. the 64^2-expert MONET-VD): trained again, not resumed
            log(f"model {recipe.name}: {directory} {why}; training it again")
            shutil.rmtree(directory)
    checkpoint = (directory / "checkpoint").is_dir()
    if model_is_complete(directory) and (training_shortfall(directory) is None or not checkpoint):
        log(f"model {recipe.name}: {directory} (cached)")
        return directory
    # a killed or capped run continues exactly; one killed before its first checkpoint starts over
    resume = " --resume" if checkpoint else " --force" if directory.is_dir() else ""
    start_step = ((_read_json(directory / "checkpoint" / "trainer_state.json") or {}).get("step") or 0
                  if checkpoint else 0)
    args = " ".join(shlex.quote(arg) for arg in recipe.train_args)
    if recipe.model_config:  # keys without a flag (the MoE's num_experts, router_aux_loss_coef): a --config file
        config = directory.parent / f"{recipe.name}.config.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(recipe.model_config, sort_keys=True) + "\n", encoding="utf-8")
        args = f"--config {shlex.quote(str(config))} {args}".strip()
    cap = "" if max_minutes is None else f" --max-minutes {max_minutes:g}"
    run_shell(f"monet-train --arch {recipe.arch} --data {shlex.quote(str(corpus / 'train.jsonl'))} "
              f"-o {shlex.quote(str(directory))} --steps {steps}{cap} "
              f"--eval-every {max(1, steps // 5)} --checkpoint-every {max(1, steps // 5)} {args}{resume}", log,
              FirstStepsEstimate(recipe, directory / "train_log.jsonl", steps, int(start_step), log))
    return directory


__all__ = ["PROBE_STEPS", "SLOW_FACTOR", "FirstStepsEstimate", "estimate_lines", "model_is_complete",
           "planned_steps", "recipe_matches", "train_to_budget", "training_shortfall"]
