"""The JSON-lines training log (``train_log.jsonl``, ``tune_log.jsonl``): written by rank 0 only, one
record per line, flushed per record; a resume cuts it back to what it held at the checkpoint."""

from __future__ import annotations

from pathlib import Path

from ..streams import strict_json


class TrainingLog:
    """``path`` opened for appending on the main process (a fresh file unless ``keep_bytes`` is given: a
    resume keeps the first ``keep_bytes`` bytes, the log as the checkpoint saw it)."""

    def __init__(self, path: Path, *, main: bool, on_log=None, keep_bytes: int | None = None):
        self.path, self.main, self.on_log = Path(path), main, on_log
        self.handle = None
        if not main:
            return
        if keep_bytes is not None and self.path.exists():
            with open(self.path, "r+", encoding="utf-8") as handle:
                handle.truncate(keep_bytes)
        elif keep_bytes is None:
            self.path.unlink(missing_ok=True)
        self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def write(self, record: dict) -> None:
        if self.handle is None:
            return
        self.handle.write(strict_json.dumps(record) + "\n")
        self.handle.flush()
        if self.on_log is not None:
            self.on_log(record)

    def size(self) -> int:
        """Bytes written so far (0 off the main process): what a checkpoint records."""
        if self.handle is None:
            return 0
        self.handle.flush()
        return self.path.stat().st_size

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


__all__ = ["TrainingLog"]
