"""When a run stops before its step budget: ``--max-minutes`` (on any process) or ``--stop-at-step``.
Either way the loop checkpoints first, so ``--resume`` continues exactly.

Testing hook: ``MOETOOLS_TRAIN_STEP_DELAY=SECONDS`` in the environment makes every step of monet-train and
moe-tune sleep that long (read here and nowhere else), so a test can show what a slow or busy machine does
to a run (it still trains its ``--steps``; only ``--max-minutes`` cuts it short) without one.
"""

from __future__ import annotations

import math
import os
import time

from ..errors import UsageError

STEP_DELAY_VARIABLE = "MOETOOLS_TRAIN_STEP_DELAY"


def injected_step_delay() -> float:
    """Seconds of sleep per step from ``MOETOOLS_TRAIN_STEP_DELAY`` (0 when unset or empty)."""
    text = os.environ.get(STEP_DELAY_VARIABLE, "").strip()
    if not text:
        return 0.0
    try:
        delay = float(text)
    except ValueError:
        delay = math.nan
    if not math.isfinite(delay) or delay < 0:
        raise UsageError(f"{STEP_DELAY_VARIABLE}={text!r} is not a number of seconds >= 0")
    return delay


class StopRule:
    """``max_minutes`` of wall time from construction, or ``stop_at_step`` steps done."""

    def __init__(self, *, max_minutes: float | None = None, stop_at_step: int | None = None):
        self.max_minutes, self.stop_at_step = max_minutes, stop_at_step
        self.step_delay = injected_step_delay()
        self.started = time.monotonic()

    def should_stop(self, step: int, dist) -> bool:
        """A collective (every process calls it every step): out of time anywhere, or at ``stop_at_step``.
        Sleeps the testing hook's delay first, so the delay counts as the step's time."""
        if self.step_delay:
            time.sleep(self.step_delay)
        out_of_time = self.max_minutes is not None and (time.monotonic() - self.started) > self.max_minutes * 60
        return dist.any(out_of_time) or (self.stop_at_step is not None and step >= self.stop_at_step)


__all__ = ["STEP_DELAY_VARIABLE", "StopRule", "injected_step_delay"]
