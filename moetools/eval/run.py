"""moe-eval over several models: records of formats/eval.md, deltas against the first model."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..progress import ProgressFactory, no_progress


def load_for_eval(path, *, dtype: str = "auto", device: str = "cpu"):
    """load_model for a base, dense or masked directory. A ``remote``-mode masked directory is loaded with
    trust_remote_code only when its custom code and every ``auto_map`` are exactly moe-mask's own (ModelError,
    exit 2, before any of its code runs: moetools.models.loader.check_trusted_code)."""
    from ..errors import ModelError
    from ..mask.directory import mask_record_problem, read_mask_record
    from ..models import load_model
    from ..models.loader import check_trusted_code

    record = read_mask_record(path)
    problem = None if record is None else mask_record_problem(record)
    if problem:
        raise ModelError(f"{path}: {problem}")
    record = record or {}
    trust = record.get("mode") == "remote"
    if trust:
        check_trusted_code(path)
    else:
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

    ``progress(description, total, unit)`` (moetools.progress) is advanced per batch of --data evaluated
    (in documents, out of all of them) and per --choices item, one bar per model and part.
    ``loss_definition`` is one of :data:`moetools.eval.loss.LOSS_DEFINITIONS` (which tokens a domain's
    loss scores).
    """
    from ..corpus.documents import read_corpus
    from ..mask.directory import read_mask_record
    from .bootstrap import paired_delta_interval
    from .choices import choice_accuracy, read_choice_items
    from .loss import domain_loss

    items = read_choice_items(choices) if choices else None
    # read once, before any model loads: empty or unusable input is refused first (moetools.corpus.documents)
    documents = list(read_corpus(data, text_field=text_field)) if data is not None else None
    first_domains: dict = {}
    first_documents: dict = {}
    first_choice: dict = {}
    for position, path in enumerate(paths):
        if on_model:
            on_model(str(path))
        loaded = load_for_eval(path, dtype=dtype, device=device)
        mask = read_mask_record(path)
        yield {"type": "model", "model": position, "identity": identity_of(loaded),
               "masked": None if mask is None else {"mode": mask.get("mode"), "base": mask.get("base"),
                                                    "experts": mask.get("experts")}}
        if documents is not None:
            # done/total in documents, so that the time left is known: the documents read count in the
            # share of their sequences scored (the rest waits for a batch)
            with progress(f"model {position}: documents", total=len(documents), unit="documents") as bar:
                counts = {"documents": 0, "read": 0, "scored": 0, "shown": 0.0}

                def count_read(size: int, counts=counts) -> None:
                    counts["documents"] += 1
                    counts["read"] += size

                def count_batch(size: int, bar=bar, counts=counts) -> None:
                    counts["scored"] += size
                    done = counts["documents"] * counts["scored"] / max(1, counts["read"])
                    if done > counts["shown"]:
                        bar.advance(done - counts["shown"])
                        counts["shown"] = done
                    if on_batch:
                        on_batch(size)

                per_document: dict = {}
                results = domain_loss(loaded.model, loaded.tokenizer, documents, domain_field=domain_field,
                                      max_length=max_length, batch_tokens=batch_tokens,
                                      definition=loss_definition, on_batch=count_batch, on_read=count_read,
                                      per_document=per_document)
                bar.advance(max(0.0, len(documents) - counts["shown"]))
            if position == 0:
                first_documents = per_document
            for domain, values in results.items():
                base = first_domains.setdefault(domain, values) if position == 0 else first_domains.get(domain)
                record = {"type": "domain", "model": position, "domain": domain, **values, "delta_loss": None}
                if position and base and base["loss"] is not None and values["loss"] is not None:
                    record["delta_loss"] = values["loss"] - base["loss"]
                    record["delta_loss_ci95"] = paired_delta_interval(  # over the domain's documents, paired
                        {i: (v[2], v[3]) for i, v in first_documents.items() if v[1] == domain},
                        {i: (v[2], v[3]) for i, v in per_document.items() if v[1] == domain})
                yield record
            for index, (doc_id, domain, tokens, loss_sum) in per_document.items():
                yield {"type": "document", "model": position, "doc": doc_id, "index": index, "domain": domain,
                       "tokens": tokens, "loss": loss_sum / tokens if tokens else None}
        if items is not None:
            with progress(f"model {position}: choice items", total=len(items)) as bar:
                values = choice_accuracy(loaded.model, loaded.tokenizer, items, on_item=bar.advance)
            if position == 0:
                first_choice = values
            deltas = {f"delta_{k}": (values[k] - first_choice[k]) if position and values[k] is not None else None
                      for k in ("acc", "acc_norm")}
            yield {"type": "choice", "model": position, "task": str(choices), **values, **deltas}
        del loaded
