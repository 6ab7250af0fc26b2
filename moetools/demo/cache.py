"""Which demo steps can be skipped on a rerun: a stamp of each step's command and inputs (as ``make`` does).

A cached ``make demo`` (corpus and models built) must take under two minutes, and most of its time
would go to recomputing streams whose inputs did not change: the traces, the embedding judge,
moe-mask + moe-eval. Each such step writes ``.stamps/<first output>.json`` beside its first output
after it succeeded (a hidden directory, so ``sets/*.json`` still names only the sets): its
command line and a fingerprint of every input. A rerun skips the step when every output exists and
the stamp equals what it would write now; otherwise the outputs and the stamp are removed first, so
a step that then fails leaves nothing stale behind.

Fingerprints: a file under 4 MiB by its SHA-256 (the demo rewrites small inputs such as the corpus
slice and the experts sets with identical bytes), a larger file by its size and modification time,
a directory by the fingerprints of every file under it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from ..streams import strict_json

#: the hidden directory beside an output that holds its stamp
STAMPS = ".stamps"
#: files below this many bytes are fingerprinted by content
HASHED_BELOW = 4 << 20


def fingerprint(path: Path):
    """A JSON-able value that changes when the file or directory at ``path`` changes (None: missing)."""
    path = Path(path)
    if path.is_dir():
        return {str(child.relative_to(path)): fingerprint(child) for child in sorted(path.rglob("*"))
                if child.is_file() and STAMPS not in child.relative_to(path).parts
                and not child.name.endswith(".stamp.json")}
    if not path.is_file():
        return None
    stat = path.stat()
    if stat.st_size < HASHED_BELOW:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return [stat.st_size, stat.st_mtime_ns]


def stamp_path(outputs: list[Path]) -> Path:
    first = Path(outputs[0])
    return first.parent / STAMPS / f"{first.name}.json"


def _stamp(line: str, inputs: list[Path]) -> dict:
    return {"command": line, "inputs": {str(path): fingerprint(path) for path in inputs}}


def up_to_date(line: str, inputs: list[Path], outputs: list[Path]) -> bool:
    """True when every output exists and was made by ``line`` from these very inputs."""
    stamp = stamp_path(outputs)
    if not stamp.is_file() or not all(Path(output).exists() for output in outputs):
        return False
    try:
        return json.loads(stamp.read_text()) == _stamp(line, inputs)
    except ValueError:
        return False


def forget(outputs: list[Path]) -> None:
    """Remove the outputs and their stamp (before a step runs again)."""
    stamp_path(outputs).unlink(missing_ok=True)
    first = Path(outputs[0])
    first.with_name(first.name + ".stamp.json").unlink(missing_ok=True)  # where older versions kept it
    for output in map(Path, outputs):
        if output.is_dir():
            shutil.rmtree(output)
        else:
            output.unlink(missing_ok=True)


def remember(line: str, inputs: list[Path], outputs: list[Path]) -> None:
    """Write the stamp after the step succeeded."""
    stamp_path(outputs).parent.mkdir(parents=True, exist_ok=True)
    stamp_path(outputs).write_text(strict_json.dumps(_stamp(line, inputs), indent=1) + "\n")


def run_cached(line: str, log, run, *, inputs: list[Path], outputs: list[Path], skipped: str | None = None) -> bool:
    """``run()`` unless the step is up to date; returns True when it ran. ``skipped``: what is logged then."""
    if up_to_date(line, inputs, outputs):
        log(skipped or f"$ {line}  (up to date: inputs unchanged)")
        return False
    forget(outputs)
    run()
    remember(line, inputs, outputs)
    return True


__all__ = ["fingerprint", "forget", "remember", "run_cached", "up_to_date"]
