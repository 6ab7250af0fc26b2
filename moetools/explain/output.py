"""Resuming a labels output: what an earlier run of the same command already wrote.

A run writing ``-o FILE`` streams its labels into ``FILE.partial`` (one flushed
JSON line each) and renames it to ``FILE`` with the end record when done. A
rerun reads ``FILE.partial`` (a killed run; a cut-off last line is ignored), or
else ``FILE`` (a finished run), keeps its ``ok`` labels, skips those experts and
asks again only for the rest (failed ones included). The earlier run must have
used the same explainer and prompt: mixing two explainers in one file is refused.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..errors import FormatError, TruncatedStreamError, UsageError
from ..streams import StreamReader
from ..streams.files import is_stdio, open_input, partial_path


def previous_labels(output: str | None, settings: dict) -> list[dict]:
    """The ``ok`` labels an earlier run left in ``output`` (its partial file first); [] when none."""
    if is_stdio(output):
        return []
    path = Path(output)
    source = partial_path(path) if partial_path(path).exists() else path if path.exists() else None
    if source is None or source.stat().st_size == 0:
        return []
    labels: list[dict] = []
    with open_input(source) as handle:
        try:
            reader = StreamReader(handle, kinds="labels", validate=True)  # kept labels go into the new output
        except TruncatedStreamError:
            return []
        except FormatError as error:
            raise UsageError(f"{source} exists and is not a labels stream ({error}); "
                             "choose another -o or remove it") from None
        earlier = reader.header.get("explain") or {}
        for key in ("explainer", "prompt"):
            if earlier.get(key) != settings.get(key):
                raise UsageError(f"{source} was written with {key} {earlier.get(key)} and this run uses "
                                 f"{settings.get(key)}; use another -o or remove it to start over")
        with contextlib.suppress(TruncatedStreamError):
            for record in reader:
                if record.get("type") == "label" and record.get("status") == "ok":
                    labels.append(record)
    return labels
