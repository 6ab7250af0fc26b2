"""When a run stops before its step budget: ``--max-minutes`` (on any process) or ``--stop-at-step``.
Either way the loop checkpoints first, so ``--resume`` continues exactly."""

from __future__ import annotations

import time


class StopRule:
    """``max_minutes`` of wall time from construction, or ``stop_at_step`` steps done."""

    def __init__(self, *, max_minutes: float | None = None, stop_at_step: int | None = None):
        self.max_minutes, self.stop_at_step = max_minutes, stop_at_step
        self.started = time.monotonic()

    def should_stop(self, step: int, dist) -> bool:
        """A collective (every process calls it every step): out of time anywhere, or at ``stop_at_step``."""
        out_of_time = self.max_minutes is not None and (time.monotonic() - self.started) > self.max_minutes * 60
        return dist.any(out_of_time) or (self.stop_at_step is not None and step >= self.stop_at_step)


__all__ = ["StopRule"]
