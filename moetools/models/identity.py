"""The model identity written into every stream header (formats/README.md, "Header record").

``fingerprint`` (scheme 2) = ``"v2:sha256:" + hex`` of SHA-256 over three parts, each
preceded by its name and a zero byte:

- ``config``: the canonical config JSON (keys sorted, no whitespace, transformers'
  private ``_*`` keys and ``transformers_version`` dropped);
- ``tokenizer``: the tokenizer's *content* as canonical JSON (:func:`tokenizer_content`):
  vocabulary, merges, added and special tokens, normalisation and pre-tokenisation
  rules; not the files' bytes, so a tokenizer re-saved by another transformers
  version (keys added to ``tokenizer_config.json``) keeps its identity;
- ``weights``: a cheap sample of the weights (:func:`weights_digest`): the merged
  safetensors ``__metadata__``, then for every tensor in name order its name, dtype and
  shape and :data:`SAMPLE_BLOCKS` evenly spaced blocks of :data:`SAMPLE_BYTES` bytes
  (a tensor of at most 4 KiB whole). A fine-tuned checkpoint with the base's config
  therefore gets another identity, at the cost of reading ~4 KiB per tensor.

Two directories holding the same config, tokenizer content and weights get the same
fingerprint, wherever they live and however the weights are sharded. Scheme 1
(``"sha256:"`` + hex over the config and the tokenizer files' bytes, moetools 0.1.0)
is never produced any more; its fingerprints never equal scheme 2's.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

SCHEME = "v2:sha256:"
#: blocks sampled from each tensor, evenly spaced from its first to its last byte
SAMPLE_BLOCKS = 64
SAMPLE_BYTES = 64
#: tokenizer_config.json / special_tokens_map.json keys that change what the tokenizer produces
SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
                "additional_special_tokens", "extra_special_tokens", "add_bos_token", "add_eos_token",
                "add_prefix_space", "do_lower_case", "added_tokens_decoder")
#: the parts of tokenizer.json that define tokenisation (its "truncation", "padding", "version" do not)
TOKENIZER_JSON_KEYS = ("normalizer", "pre_tokenizer", "model", "post_processor", "decoder")
_TORCH_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
                 "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def canonical_json(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def canonical_config(config) -> str:
    """Canonical JSON of a transformers config (or a dict)."""
    data = config if isinstance(config, dict) else config.to_dict()
    clean = {k: v for k, v in data.items() if not k.startswith("_") and k != "transformers_version"}
    return canonical_json(clean)


# -- tokenizer ------------------------------------------------------------------------------------

def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _token_text(value):
    """A special token as its text: ``{"content": "<s>", ...}`` (AddedToken) -> ``"<s>"``, lists item-wise."""
    if isinstance(value, dict) and "content" in value:
        return value["content"]
    if isinstance(value, list):
        return [_token_text(item) for item in value]
    if isinstance(value, dict):  # added_tokens_decoder: {"id": {"content": ..., "special": ...}}
        return {str(key): [_token_text(item), bool(item.get("special"))] if isinstance(item, dict) else item
                for key, item in value.items()}
    return value


def _tokenizer_json(data: dict) -> dict:
    content = {key: data.get(key) for key in TOKENIZER_JSON_KEYS}
    model = dict(content["model"] or {})
    if isinstance(model.get("merges"), list):  # tokenizers >= 0.20 writes pairs, older versions "a b"
        model["merges"] = [" ".join(pair) if isinstance(pair, list) else pair for pair in model["merges"]]
    content["model"] = model
    content["added_tokens"] = sorted(([token.get("id"), token.get("content"), bool(token.get("special"))]
                                      for token in data.get("added_tokens") or [] if isinstance(token, dict)),
                                     key=lambda entry: (entry[0] is None, entry[0] or 0, str(entry[1])))
    return content


def tokenizer_content(directory: str | Path) -> dict:
    """What the tokenizer in ``directory`` produces, as plain data (see the module docstring)."""
    directory = Path(directory)
    content: dict = {}
    data = _read_json(directory / "tokenizer.json")
    if isinstance(data, dict):
        content["tokenizer.json"] = _tokenizer_json(data)
    vocab = _read_json(directory / "vocab.json")
    if vocab is not None:
        content["vocab.json"] = vocab
    for name in ("merges.txt", "vocab.txt"):
        path = directory / name
        if path.is_file():
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            content[name] = [line for line in lines if line and not line.startswith("#version")]
    model = directory / "tokenizer.model"  # sentencepiece: its bytes are its content
    if model.is_file():
        content["tokenizer.model"] = hashlib.sha256(model.read_bytes()).hexdigest()
    added = _read_json(directory / "added_tokens.json")
    if added:
        content["added_tokens.json"] = added
    special: dict = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        settings = _read_json(directory / name)
        if not isinstance(settings, dict):
            continue
        for key in SPECIAL_KEYS:
            value = _token_text(settings.get(key))
            if key == "extra_special_tokens":  # transformers 5's name for additional_special_tokens
                key = "additional_special_tokens"
            if value not in (None, [], {}) and key not in special:
                special[key] = value
    if special:
        content["special"] = special
    return content


# -- weights ----------------------------------------------------------------------------------------

def _sample(read, size: int) -> bytes:
    """SAMPLE_BLOCKS blocks of SAMPLE_BYTES, evenly spaced over ``size`` bytes (all of them when small)."""
    if size <= SAMPLE_BLOCKS * SAMPLE_BYTES:
        return read(0, size)
    last = size - SAMPLE_BYTES
    return b"".join(read(last * index // (SAMPLE_BLOCKS - 1), SAMPLE_BYTES) for index in range(SAMPLE_BLOCKS))


def _weight_files(directory: Path) -> list[Path]:
    """The safetensors files transformers loads: the index's shards, else model.safetensors."""
    for index_name in ("model.safetensors.index.json",):
        index = _read_json(directory / index_name)
        if isinstance(index, dict) and isinstance(index.get("weight_map"), dict):
            return sorted({directory / name for name in index["weight_map"].values()})
    single = directory / "model.safetensors"
    return [single] if single.is_file() else []


def _safetensors_digest(files: list[Path]) -> bytes:
    """The weight sample read with positioned reads (``os.pread``), not a mapping: a mapping's faulted-in
    pages (the kernel maps whole neighbourhoods around each sampled block) would count in the process's
    resident set as if it had read every weight."""
    import os

    tensors, metadata, handles = {}, {}, []
    try:
        for number, path in enumerate(files):
            handle = open(path, "rb")  # noqa: SIM115 - closed in finally, all files open during the sample
            handles.append(handle)
            prefix = handle.read(8)
            (length,) = struct.unpack("<Q", prefix) if len(prefix) == 8 else (-1,)
            if not 0 < length <= path.stat().st_size - 8:  # random bytes or a file cut short
                from ..errors import ModelError

                raise ModelError(f"{path} is not a complete safetensors file (its header length does not fit)")
            header = json.loads(handle.read(length))
            metadata.update(header.pop("__metadata__", None) or {})
            for name, info in header.items():
                start, end = info["data_offsets"]
                tensors[name] = (info["dtype"], info["shape"], number, 8 + length + start, end - start)
        digest = hashlib.sha256(canonical_json(metadata).encode())
        for name in sorted(tensors):
            dtype, shape, number, start, size = tensors[name]
            descriptor = handles[number].fileno()
            digest.update(b"\0" + canonical_json([name, dtype, shape]).encode() + b"\0")
            digest.update(_sample(lambda offset, count, descriptor=descriptor, start=start:
                                  os.pread(descriptor, count, start + offset), size))
        return digest.digest()
    finally:
        for handle in handles:
            handle.close()


def _state_dict_digest(model) -> bytes:
    """The same sample over an in-memory model's tensors (no weight files: e.g. a model built in Python)."""
    import torch

    digest = hashlib.sha256(canonical_json({}).encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        dtype = _TORCH_DTYPES.get(str(tensor.dtype).removeprefix("torch."), str(tensor.dtype))
        digest.update(b"\0" + canonical_json([name, dtype, list(tensor.shape)]).encode() + b"\0")
        raw = flat.contiguous().view(torch.uint8) if flat.numel() else flat.to(torch.uint8)

        def read(offset, count, raw=raw):
            return raw[offset:offset + count].cpu().numpy().tobytes()

        digest.update(_sample(read, raw.numel()))
    return digest.digest()


def weights_digest(directory: str | Path | None = None, model=None) -> bytes | None:
    """SHA-256 of the weight sample: from the safetensors files in ``directory``, else ``model``'s tensors."""
    files = _weight_files(Path(directory)) if directory is not None else []
    if files:
        return _safetensors_digest(files)
    if model is not None:
        return _state_dict_digest(model)
    return None


# -- the identity -----------------------------------------------------------------------------------

def fingerprint(config, directory: str | Path | None = None, model=None) -> str:
    """Scheme 2 fingerprint of config + tokenizer content + weight sample (module docstring)."""
    digest = hashlib.sha256(b"config\0" + canonical_config(config).encode("utf-8"))
    if directory is not None:
        digest.update(b"\0tokenizer\0" + canonical_json(tokenizer_content(directory)).encode("utf-8"))
    weights = weights_digest(directory, model)
    if weights is not None:
        digest.update(b"\0weights\0" + weights)
    return SCHEME + digest.hexdigest()


def model_identity(model, adapter=None, path: str | Path | None = None, name: str | None = None) -> dict:
    """``{"name", "path", "model_type", "num_layers", "moe_layers", "num_experts", "top_k", "fingerprint"}``,
    and ``shared_routers`` where one router routes several layers (:mod:`moetools.models.shared_routers`)."""
    from .shared_routers import identity_field, router_groups

    if adapter is None:
        from .registry import adapter_for

        adapter = adapter_for(model)
    layers = adapter.moe_layers()
    config = model.config
    identity = {
        "name": name or (Path(path).name if path else getattr(config, "name_or_path", None) or config.model_type),
        "path": str(Path(path).resolve()) if path else None,
        "model_type": config.model_type,
        "num_layers": len(adapter.decoder_layers()),
        "moe_layers": [layer.index for layer in layers],
        "num_experts": layers[0].num_experts,
        "top_k": layers[0].top_k,
        "fingerprint": fingerprint(config, path, model),
    }
    identity.update(identity_field(router_groups(model, adapter)))
    return identity
