"""The demo's models trained to their step budget, whatever the load.

Each model trains ``--steps`` steps (monet-train): a busy machine takes longer, it does not get a
less-trained model. Before the rest of the budget the demo times the first :data:`PROBE_STEPS` steps
(``monet-train --stop-at-step``, then ``--resume``: the same run, continued exactly), says how long the
budget will take beside the time measured on 2 idle cores (``Recipe.idle_step_seconds``), and when the
machine is much slower says so and how to shorten it (``--steps``). A user may still cap the time
(``--max-minutes``); a model that stopped short of its budget is named by :func:`training_shortfall`,
which the summary's verdict carries.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

PROBE_STEPS = 5      # steps timed before the rest of the budget (the first one, with its warm-up, is not counted)
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


def step_seconds(log_path: Path) -> float | None:
    """Seconds per step over the logged training steps after the first (which carries the warm-up)."""
    points = []
    try:
        with open(log_path, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                if record.get("type") == "train":
                    points.append((record["step"], record["elapsed_s"]))
    except (OSError, ValueError, KeyError):
        return None
    if len(points) < 2:
        return None
    (first_step, first_time), (last_step, last_time) = points[0], points[-1]
    return (last_time - first_time) / (last_step - first_step) if last_step > first_step else None


def estimate_lines(name: str, per_step: float, done: int, steps: int, idle_per_step: float | None) -> list[str]:
    """What the first steps say about the rest: the time left, beside 2 idle cores; how to shorten it."""
    left = steps - done
    lines = [f"model {name}: {per_step:.2f} s/step over its first {done} steps: about "
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
    args = " ".join(shlex.quote(arg) for arg in recipe.train_args)
    base = (f"monet-train --arch {recipe.arch} --data {shlex.quote(str(corpus / 'train.jsonl'))} "
            f"-o {shlex.quote(str(directory))} --steps {steps} "
            f"--eval-every {max(1, steps // 5)} --checkpoint-every {max(1, steps // 5)} {args}")
    cap = "" if max_minutes is None else f" --max-minutes {max_minutes:g}"
    if checkpoint:  # a killed or capped run continues exactly
        run_shell(f"{base}{cap} --resume", log)
        return directory
    if steps <= PROBE_STEPS:
        run_shell(f"{base}{cap}{' --force' if directory.is_dir() else ''}", log)
        return directory
    # one killed before its first checkpoint starts over; the first steps are timed before the rest
    spent = run_shell(f"{base}{cap} --stop-at-step {PROBE_STEPS}{' --force' if directory.is_dir() else ''}", log)
    per_step = step_seconds(directory / "train_log.jsonl")
    if per_step is not None:
        for line in estimate_lines(recipe.name, per_step, PROBE_STEPS, steps, recipe.idle_step_seconds):
            log(line)
    if ((_read_json(directory / "training_metadata.json") or {}).get("steps") or 0) < PROBE_STEPS:
        return directory  # the user's --max-minutes ended it within the first steps
    if max_minutes is not None:
        cap = f" --max-minutes {max(max_minutes - spent / 60, 0.01):g}"
    run_shell(f"{base}{cap} --resume", log)
    return directory


__all__ = ["PROBE_STEPS", "SLOW_FACTOR", "estimate_lines", "model_is_complete", "planned_steps", "recipe_matches",
           "step_seconds", "train_to_budget", "training_shortfall"]
