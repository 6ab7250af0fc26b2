"""The on-disk response cache: one JSON file per request, keyed by what the answer depends on.

Key: SHA-256 of the canonical JSON of the backend's ``request_identity`` — backend
name, model, the prompt (chat messages, or the self-explanation's inputs) and the
generation parameters. The endpoint URL is not part of the key (the same model
served elsewhere answers alike) and no secret ever is: the API key is neither in
the key nor in the file.

Layout: ``CACHE_DIR/explain/ab/abcdef....json`` holding ``{"key", "request",
"response": {"text", "prompt_tokens", "completion_tokens"}, "created"}``. Writes
are atomic (temporary file in the same directory, then ``os.replace``), so a
killed run leaves either the whole entry or none, and concurrent runs sharing
a cache never read half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from ..llm.base import Completion


def default_cache_dir() -> Path:
    """``$MOETOOLS_HOME/cache``, with ``MOETOOLS_HOME`` defaulting to ``~/.cache/moetools``."""
    home = os.environ.get("MOETOOLS_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "moetools")
    return Path(home) / "cache"


def request_key(identity: dict) -> str:
    canonical = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """Get and put backend answers by request identity; ``enabled=False`` makes it a no-op."""

    def __init__(self, root: str | os.PathLike | None = None, *, enabled: bool = True, read: bool = True):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled
        self.read = read
        self.directory = self.root / "explain"

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, identity: dict) -> Completion | None:
        if not (self.enabled and self.read):
            return None
        path = self._path(request_key(identity))
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            response = data["response"]
            return Completion(text=str(response["text"]), prompt_tokens=int(response.get("prompt_tokens", 0)),
                              completion_tokens=int(response.get("completion_tokens", 0)),
                              details=response.get("details"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a damaged entry counts as missing and is overwritten

    def put(self, identity: dict, completion: Completion) -> None:
        if not self.enabled:
            return
        key = request_key(identity)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"key": key, "request": identity, "created": time.time(),
                 "response": {"text": completion.text, "prompt_tokens": completion.prompt_tokens,
                              "completion_tokens": completion.completion_tokens,
                              "details": completion.details}}
        handle, temporary = tempfile.mkstemp(prefix=f".{key[:8]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(entry, file, ensure_ascii=False)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
