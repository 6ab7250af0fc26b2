"""The one model loader every tool uses (trace, explain --backend self, mask, tune, eval, probe).

    loaded = load_model("path/to/olmoe", dtype="auto", device="cpu")
    loaded.model, loaded.tokenizer, loaded.adapter      # adapter None with require_moe=False on a dense model

Local directories only (``local_files_only``; nothing is fetched from a hub) and
``trust_remote_code`` off unless the caller asks. MONET registers itself with the
transformers Auto classes through :mod:`moetools.models.monet`, imported here once.
Every failure is a :class:`moetools.errors.ModelError` (exit 2) naming the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError, UsageError

DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class LoadedModel:
    model: object  # transformers PreTrainedModel, in eval mode
    tokenizer: object  # its tokenizer (None with tokenizer=False)
    adapter: object  # moetools.models.Adapter, or None for a model with no MoE layers (require_moe=False)
    path: str

    def __iter__(self):  # (model, tokenizer, adapter) = load_model(...)
        return iter((self.model, self.tokenizer, self.adapter))


def torch_dtype(name: str):
    """``"auto"`` or a torch dtype for a ``--dtype`` name (UsageError on an unknown one)."""
    import torch

    table = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise UsageError(f"unknown --dtype {name!r} (choose from {', '.join(DTYPE_NAMES)})")
    return table[name]


def check_model_directory(path) -> Path:
    directory = Path(path)
    if not directory.is_dir():
        raise ModelError(f"model directory {path} does not exist")
    if not (directory / "config.json").is_file():
        raise ModelError(f"{path} is not a transformers model directory (no config.json)")
    return directory


def load_model(path, *, dtype: str = "auto", device: str = "cpu", device_map: str | None = None,
               tokenizer: bool = True, require_moe: bool = True, trust_remote_code: bool = False,
               train: bool = False) -> LoadedModel:
    """Load a local model directory: model (eval mode unless ``train``), tokenizer, adapter.

    ``require_moe=False`` accepts a model without MoE layers (adapter None): a dense
    baseline for moe-eval, moe-tune or moe-probe.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from . import monet  # noqa: F401 - registers MONET with the Auto classes
    from .registry import adapter_for

    hf_logging.disable_progress_bar()  # moetools reports on stderr itself
    directory = check_model_directory(path)
    kwargs = {"dtype": torch_dtype(dtype), "local_files_only": True, "trust_remote_code": trust_remote_code}
    if device_map:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(str(directory), **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as error:
        raise ModelError(f"cannot load the model in {path}: {str(error).splitlines()[0]}") from None
    if not device_map:
        model.to(device)
    model.train(train)
    loaded_tokenizer = None
    if tokenizer:
        try:
            loaded_tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True,
                                                             trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelError(f"cannot load the tokenizer in {path}: {str(error).splitlines()[0]}") from None
    adapter = None
    try:
        adapter = adapter_for(model)
    except ModelError:
        if require_moe:
            raise
    return LoadedModel(model, loaded_tokenizer, adapter, str(path))


__all__ = ["DTYPE_NAMES", "LoadedModel", "check_model_directory", "load_model", "torch_dtype"]
