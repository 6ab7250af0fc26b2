"""The one model loader every tool uses (trace, explain --backend self, mask, tune, eval, probe).

    loaded = load_model("path/to/olmoe", dtype="auto", device="cpu")
    loaded.model, loaded.tokenizer, loaded.adapter      # adapter None with require_moe=False on a dense model
    load_model("smollm2.gguf", require_moe=False)       # a GGUF file: de-quantized by transformers (gguf)

Local directories only (``local_files_only``; nothing is fetched from a hub) and
``trust_remote_code`` off unless the caller asks. MONET is registered with the
transformers Auto classes by importing :mod:`moetools.models.monet`, done here and
nowhere else. Every failure of the model directory is a :class:`moetools.errors.ModelError`
naming the path, and a device that does not exist a :class:`UsageError` (both exit 2),
checked before anything is loaded.

Weights that do not belong to the config are refused, not loaded: any parameter or buffer
the checkpoint lacks (transformers would initialise it at random), any tensor the model has
no place for, and any tensor of another shape is a :class:`ModelError` naming the first few
(:func:`check_loading_info`, on transformers' own loading report). Weights transformers ties
or derives itself (a tied unembedding, non-persistent buffers) are not in that report.
``device_map="meta"`` checks a directory's weights against its config without holding them
(moe-mask, moe-score --model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError, UsageError

DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
#: files of which a directory needs one to hold a tokenizer (transformers 5 builds an EMPTY
#: tokenizer from config.json alone, and every text then encodes to no tokens)
TOKENIZER_VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                              "sentencepiece.bpe.model", "tekken.json")
#: tensors named per kind of mismatch in the one-line refusal
NAMED_TENSORS = 3
#: what from_pretrained raises on a damaged or mismatched directory (SafetensorError: weights
#: file of random bytes or cut short; the others: bad config, missing or misshapen weights)
_LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, RuntimeError, TypeError,
                                                 AttributeError, EOFError)


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


def check_device(device: str, option: str = "--device"):
    """The torch.device for ``device``; UsageError when it is not a device name or not on this machine."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"{option} {device}: not a torch device (cpu, cuda, cuda:1, mps)") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"{option} {device}: no CUDA GPU is available here (use --device cpu)")
        if parsed.index is not None and parsed.index >= count:
            raise UsageError(f"{option} {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif parsed.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError(f"{option} {device}: MPS is not available here (use --device cpu)")
    elif parsed.type != "cpu":
        accelerator = getattr(torch, parsed.type, None)
        available = getattr(accelerator, "is_available", None)
        if available is None or not available():
            raise UsageError(f"{option} {device}: no {parsed.type} device is available here (use --device cpu)")
    return parsed


def check_model_directory(path) -> Path:
    directory = Path(path)
    if not directory.is_dir():
        raise ModelError(f"model directory {path} does not exist")
    if not (directory / "config.json").is_file():
        raise ModelError(f"{path} is not a transformers model directory (no config.json)")
    return directory


def check_trusted_code(path) -> None:
    """``trust_remote_code`` is for moe-mask's own remote-mode directories only: ModelError (exit 2) for any
    other, or one whose code or ``auto_map`` is not exactly moe-mask's (moetools.mask.remote.check_own_code),
    before transformers runs anything."""
    from ..mask.directory import read_mask_record
    from ..mask.remote import check_own_code

    record = read_mask_record(path) or {}
    if record.get("mode") != "remote":
        raise ModelError(f"{path}: not a remote-mode directory written by moe-mask; moetools runs no other "
                         "model code (trust_remote_code)")
    check_own_code(Path(path), record.get("family", ""))


def load_tokenizer(path, *, trust_remote_code: bool = False, what: str | None = None):
    """The tokenizer saved in a local directory; ModelError when it has none or it does not load.

    ``what`` names the directory in messages (default: the path), e.g. ``"--tokenizer DIR"``.
    """
    from transformers import AutoTokenizer

    what = what or str(path)
    directory = Path(path)
    if not directory.is_dir():
        raise ModelError(f"{what}: not a directory")
    if not any((directory / name).is_file() for name in TOKENIZER_VOCABULARY_FILES):
        raise ModelError(f"{what} has no tokenizer (none of {', '.join(TOKENIZER_VOCABULARY_FILES)})")
    if trust_remote_code:
        check_trusted_code(directory)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True,
                                                  trust_remote_code=trust_remote_code)
    except _LOAD_ERRORS as error:
        raise ModelError(f"cannot load the tokenizer in {what}: {_first_line(error)}") from None
    if len(tokenizer) == 0:
        raise ModelError(f"{what} has no tokenizer (its tokenizer files hold no vocabulary)")
    return tokenizer


def register_families() -> None:
    """Register MONET and the plugin families' model classes with transformers' Auto classes."""
    from . import monet  # noqa: F401 - the one place MONET is registered with the Auto classes
    from .registry import registered_adapters

    registered_adapters()  # a plugin's module may register its model classes


def load_config(path, *, trust_remote_code: bool = False):
    """The transformers config of a local model directory (no weights); ModelError when it does not load.

    For a fresh model of the same architecture (``AutoModelForCausalLM.from_config``): MONET and
    plugin families are registered with the Auto classes first, as :func:`load_model` does.
    """
    from transformers import AutoConfig

    register_families()
    directory = check_model_directory(path)
    if trust_remote_code:
        check_trusted_code(directory)
    try:
        return AutoConfig.from_pretrained(str(directory), local_files_only=True, trust_remote_code=trust_remote_code)
    except _LOAD_ERRORS as error:
        raise ModelError(f"cannot load the config in {path}: {_first_line(error)}") from None


def load_model(path, *, dtype: str = "auto", device: str = "cpu", device_map: str | None = None,
               tokenizer: bool = True, require_moe: bool = True, trust_remote_code: bool = False,
               train: bool = False) -> LoadedModel:
    """Load a local model directory: model (eval mode unless ``train``), tokenizer, adapter.

    ``require_moe=False`` accepts a model without MoE layers (adapter None): a dense
    baseline for moe-eval, moe-tune or moe-probe. The checks that need no weights
    (device, dtype, directory, tokenizer files) come first, so a mistake costs no load time.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .registry import adapter_for

    hf_logging.disable_progress_bar()  # moetools reports on stderr itself
    if not device_map:
        check_device(device)
    torch_type = torch_dtype(dtype)
    register_families()  # before loading: a plugin's module may register its own model classes
    kwargs = {"dtype": torch_type, "local_files_only": True, "trust_remote_code": trust_remote_code}
    if Path(path).is_file() and Path(path).suffix == ".gguf":  # weights, config and tokenizer in one file
        directory, kwargs["gguf_file"] = Path(path).parent, Path(path).name
    else:
        directory = check_model_directory(path)
        if tokenizer and not any((directory / name).is_file() for name in TOKENIZER_VOCABULARY_FILES):
            raise ModelError(f"{path} has no tokenizer (none of {', '.join(TOKENIZER_VOCABULARY_FILES)})")
    if trust_remote_code:
        check_trusted_code(directory)
    if device_map:
        kwargs["device_map"] = device_map
    # the loading report comes back (mismatched shapes too, not raised) and is judged by check_loading_info
    kwargs.update(output_loading_info=True, ignore_mismatched_sizes=True)
    try:
        with _gguf_quiet(kwargs), _no_load_report():
            model, info = AutoModelForCausalLM.from_pretrained(str(directory), **kwargs)
    except (*_LOAD_ERRORS, SafetensorError) as error:
        raise ModelError(f"cannot load the model in {path}: {_first_line(error)}") from None
    check_loading_info(info, path, type(model).__name__)
    if not device_map:
        model.to(device)
    model.train(train)
    loaded_tokenizer = None
    if tokenizer and "gguf_file" in kwargs:
        try:
            with _gguf_quiet(kwargs):
                loaded_tokenizer = AutoTokenizer.from_pretrained(str(directory), gguf_file=kwargs["gguf_file"],
                                                                 local_files_only=True)
        except _LOAD_ERRORS as error:
            raise ModelError(f"cannot load the tokenizer in {path}: {_first_line(error)}") from None
    elif tokenizer:
        loaded_tokenizer = load_tokenizer(directory, trust_remote_code=trust_remote_code, what=str(path))
    adapter = None
    try:
        adapter = adapter_for(model)
    except ModelError:
        if require_moe:
            raise
    return LoadedModel(model, loaded_tokenizer, adapter, str(path))


def check_loading_info(info: dict, path, architecture: str = "its config") -> None:
    """ModelError (exit 2) unless every parameter of the model came from the checkpoint and every
    checkpoint tensor found its parameter, shape for shape. ``info``: from_pretrained's
    ``output_loading_info`` (``missing_keys``, ``unexpected_keys``, ``mismatched_keys``, ``error_msgs``)."""
    problems = []
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        problems.append(f"{len(missing)} missing (would be newly initialised): {_names(missing)}")
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda entry: str(entry[0]))
    if mismatched:
        shown = ", ".join(f"{name} {tuple(saved)} vs {tuple(wanted)}" for name, saved, wanted, *_ in
                          mismatched[:NAMED_TENSORS])
        more = f" and {len(mismatched) - NAMED_TENSORS} more" if len(mismatched) > NAMED_TENSORS else ""
        problems.append(f"{len(mismatched)} of another shape (checkpoint vs model): {shown}{more}")
    unexpected = sorted(info.get("unexpected_keys") or ())
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_names(unexpected)}")
    errors = [str(message) for message in info.get("error_msgs") or ()]
    if errors:
        problems.append(f"error: {errors[0].strip().splitlines()[0] if errors[0].strip() else errors[0]}")
    if problems:
        raise ModelError(f"the weights in {path} do not belong to its config ({architecture}): "
                         + "; ".join(problems) + "; refusing to load it (another family's or a damaged checkpoint?)")


def _names(keys: list[str]) -> str:
    more = f" and {len(keys) - NAMED_TENSORS} more" if len(keys) > NAMED_TENSORS else ""
    return ", ".join(keys[:NAMED_TENSORS]) + more


class _DropLoadReport:
    """A logging filter: transformers' multi-line LOAD REPORT table (check_loading_info says it in one line)."""

    @staticmethod
    def filter(record) -> bool:
        return "LOAD REPORT" not in str(record.msg)


def _no_load_report():
    import contextlib
    import logging

    @contextlib.contextmanager
    def quiet():
        logger = logging.getLogger("transformers.modeling_utils")
        logger.addFilter(_DropLoadReport)
        try:
            yield
        finally:
            logger.removeFilter(_DropLoadReport)

    return quiet()


def _gguf_quiet(kwargs: dict):
    """transformers' GGUF conversion draws a raw tqdm bar on stderr: keep it off the tool's stderr."""
    import contextlib
    import io

    return contextlib.redirect_stderr(io.StringIO()) if "gguf_file" in kwargs else contextlib.nullcontext()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


__all__ = ["DTYPE_NAMES", "TOKENIZER_VOCABULARY_FILES", "LoadedModel", "check_device", "check_loading_info",
           "check_model_directory", "load_config", "load_model", "load_tokenizer", "register_families",
           "torch_dtype"]
