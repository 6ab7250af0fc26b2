"""The model identity written into every stream header (formats/README.md, "Header").

``fingerprint`` = ``"sha256:" + hex`` over the canonical config JSON (keys sorted,
no whitespace, transformers' private ``_*`` keys and ``transformers_version``
dropped) followed by the bytes of each tokenizer file present in the model
directory, in :data:`TOKENIZER_FILES` order, each preceded by its name. Two
directories holding the same config and tokenizer get the same fingerprint,
wherever they live.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "vocab.txt", "merges.txt", "added_tokens.json", "chat_template.jinja")


def canonical_config(config) -> str:
    """Canonical JSON of a transformers config (or a dict)."""
    data = config if isinstance(config, dict) else config.to_dict()
    clean = {k: v for k, v in data.items() if not k.startswith("_") and k != "transformers_version"}
    return json.dumps(clean, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def fingerprint(config, directory: str | Path | None = None) -> str:
    digest = hashlib.sha256(canonical_config(config).encode("utf-8"))
    if directory is not None:
        for name in TOKENIZER_FILES:
            path = Path(directory) / name
            if path.is_file():
                digest.update(b"\0" + name.encode("ascii") + b"\0")
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
    return "sha256:" + digest.hexdigest()


def model_identity(model, adapter=None, path: str | Path | None = None, name: str | None = None) -> dict:
    """``{"name", "path", "model_type", "num_layers", "moe_layers", "num_experts", "top_k", "fingerprint"}``."""
    if adapter is None:
        from .registry import adapter_for

        adapter = adapter_for(model)
    layers = adapter.moe_layers()
    config = model.config
    return {
        "name": name or (Path(path).name if path else getattr(config, "name_or_path", None) or config.model_type),
        "path": str(Path(path).resolve()) if path else None,
        "model_type": config.model_type,
        "num_layers": len(adapter.decoder_layers()),
        "moe_layers": [layer.index for layer in layers],
        "num_experts": layers[0].num_experts,
        "top_k": layers[0].top_k,
        "fingerprint": fingerprint(config, path),
    }
