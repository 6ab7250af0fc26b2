"""moe-eval over several models: records of formats/eval.md, deltas against the first model."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..reporting import BytesRead, ProgressFactory, no_progress


def load_for_eval(path, *, dtype: str = "auto", device: str = "cpu"):
    """load_model for a base, dense or masked directory. A ``remote``-mode masked directory is loaded with
    trust_remote_code only when its custom code is exactly moe-mask's own (ModelError otherwise)."""
    from ..errors import ModelError
    from ..mask.directory import read_mask_record
    from ..mask.remote import is_own_code
    from ..models import load_model

    record = read_mask_record(path) or {}
    trust = record.get("mode") == "remote"
    if trust and not is_own_code(path, record.get("family", "")):
        raise ModelError(f"{path}: its custom code is not moe-mask's own; load it yourself with "
                         "trust_remote_code=True if you trust it")
    if not trust:
        return load_model(path, dtype=dtype, device=device, require_moe=False)
    # moe-mask's class subclasses the family's, so transformers warns "a model of type
    # moetools_masked_<family> to instantiate a model of type <family>" at every load: expected, silenced
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        return load_model(path, dtype=dtype, device=device, require_moe=False, trust_remote_code=True)
    finally:
        transformers_logging.set_verbosity(verbosity)


def identity_of(loaded) -> dict:
    from ..models import model_identity
    from ..models.identity import fingerprint

    if loaded.adapter is not None:
        return model_identity(loaded.model, loaded.adapter, path=loaded.path)
    config = loaded.model.config
    return {"name": str(loaded.path).rstrip("/").split("/")[-1], "path": str(loaded.path),
            "model_type": config.model_type, "fingerprint": fingerprint(config, loaded.path)}


def evaluate(paths: list, *, data=None, choices=None, domain_field: str = "domain", text_field: str = "text",
             max_length: int = 512, batch_tokens: int = 4096, loss_definition: str = "no-prefix",
             dtype: str = "auto", device: str = "cpu", on_batch: Callable[[int], None] | None = None,
             on_model: Callable[[str], None] | None = None, progress: ProgressFactory = no_progress) -> Iterator[dict]:
    """Yield ``model`` records then ``domain`` / ``choice`` records (formats/eval.md) for each model in turn.

    ``progress(description, total, unit)`` (moetools.reporting) is advanced per batch of --data evaluated
    (by the bytes of the --data file read, its size the total; by batches for a pipe) and per --choices
    item, one bar per model and part. ``loss_definition`` is one of
    :data:`moetools.eval.loss.LOSS_DEFINITIONS` (which tokens a domain's loss scores).
    """
    from ..corpus.documents import read_documents
    from ..mask.directory import read_mask_record
    from ..streams.files import is_stdio, open_input
    from .choices import choice_accuracy, read_choice_items
    from .loss import domain_loss

    items = read_choice_items(choices) if choices else None
    first_domains: dict = {}
    first_choice: dict = {}
    for position, path in enumerate(paths):
        if on_model:
            on_model(str(path))
        loaded = load_for_eval(path, dtype=dtype, device=device)
        mask = read_mask_record(path)
        yield {"type": "model", "model": position, "identity": identity_of(loaded),
               "masked": None if mask is None else {"mode": mask.get("mode"), "base": mask.get("base"),
                                                    "experts": mask.get("experts")}}
        if data is not None:
            source = open_input(data)
            read = BytesRead(source)  # a file: done/total in bytes of --data read, so the time left is known
            documents = read_documents(source, name="stdin" if is_stdio(data) else str(data), text_field=text_field)
            with (progress(f"model {position}: data", total=read.total, unit="bytes") if read.total is not None
                  else progress(f"model {position}: batches")) as bar:
                sequences = {"read": 0, "scored": 0}  # the bytes read count in the share of sequences scored

                def count_read(size: int, sequences=sequences) -> None:
                    sequences["read"] += size

                def count_batch(size: int, read=read, bar=bar, sequences=sequences) -> None:
                    sequences["scored"] += size
                    if read.total is not None:
                        read.catch_up(bar, done=sequences["scored"] / max(1, sequences["read"]))
                    else:
                        bar.advance(1)
                    if on_batch:
                        on_batch(size)

                try:
                    results = domain_loss(loaded.model, loaded.tokenizer, documents, domain_field=domain_field,
                                          max_length=max_length, batch_tokens=batch_tokens,
                                          definition=loss_definition, on_batch=count_batch, on_read=count_read)
                    read.catch_up(bar)
                finally:
                    if not is_stdio(data):
                        source.close()
            for domain, values in results.items():
                base = first_domains.setdefault(domain, values) if position == 0 else first_domains.get(domain)
                delta = None
                if position and base and base["loss"] is not None and values["loss"] is not None:
                    delta = values["loss"] - base["loss"]
                yield {"type": "domain", "model": position, "domain": domain, **values, "delta_loss": delta}
        if items is not None:
            with progress(f"model {position}: choice items", total=len(items)) as bar:
                values = choice_accuracy(loaded.model, loaded.tokenizer, items, on_item=bar.advance)
            if position == 0:
                first_choice = values
            deltas = {f"delta_{k}": (values[k] - first_choice[k]) if position and values[k] is not None else None
                      for k in ("acc", "acc_norm")}
            yield {"type": "choice", "model": position, "task": str(choices), **values, **deltas}
        del loaded
