"""moe-probe end to end without the CLI: a model and labels in, a probe stream out.

    from moetools.probe.run import probe_causal
    summary = probe_causal("model/", "labels.jsonl", "causal.jsonl", backend="openai",
                           backend_options={"api_base": "http://localhost:8000/v1", "model": "m"})
    summary = probe_causal("model/", "offline.labels.jsonl", "causal.jsonl", backend="offline")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import UsageError
from ..progress import Log, ProgressFactory, log_info, log_warning, no_progress
from .causal import (
    OFFLINE_PROPOSER,
    CausalOptions,
    Summary,
    evaluate,
    header_extra,
    layer_table,
    propose_llm,
    propose_offline,
    read_labels,
)

#: max_tokens of the proposer's answer unless given (four triggers and four targets as JSON)
DEFAULT_MAX_TOKENS = 256


def probe_causal(model, labels, output, *, fmt: str = "jsonl", uncompressed: bool = False, backend: str = "openai",
                 backend_options: Mapping[str, Any] | None = None, attempts: int | None = None,
                 cache_dir: str | None = None, no_cache: bool = False, refresh: bool = False,
                 triggers: int = 4, targets: int = 4, shuffles: int = 100, seed: int = 0, max_length: int = 128,
                 device: str = "cpu", dtype: str = "auto", tool: dict | None = None, log: Log = log_info,
                 warn: Log = log_warning, progress: ProgressFactory = no_progress) -> Summary:
    """Trigger/target attribution of the ``ok`` labels in ``labels`` (:mod:`moetools.probe.causal`).

    ``backend``: an LLM backend (with ``backend_options``, by name) proposes triggers and targets,
    or ``offline`` (the labels' own evidence; no backend option applies). Writes ``causal`` and
    ``causal_layer`` records to ``output``; returns the counts of the end record.
    """
    from ..models import model_identity
    from ..models.loader import load_model
    from ..streams.files import open_stream_writer
    from .dla import check_supported

    options = CausalOptions(triggers=triggers, targets=targets, attempts=3 if attempts is None else attempts,
                            seed=seed, shuffles=shuffles, max_length=max_length)
    options.check()
    given = dict(backend_options or {})
    if backend == "offline" and given:
        raise UsageError(f"--{next(iter(given)).replace('_', '-')} does not apply to --backend offline")
    loaded = load_model(model, dtype=dtype, device=device, require_moe=False)
    check_supported(loaded.model, loaded.adapter)
    identity = model_identity(loaded.model, loaded.adapter, path=model)
    summary = Summary()
    layers = {layer.index: layer.num_experts for layer in loaded.adapter.moe_layers()}
    chosen = read_labels(labels, identity, layers, summary)
    if backend == "offline":
        proposer, proposals = OFFLINE_PROPOSER, propose_offline(chosen, options)
    else:
        from ..llm import make_client
        from ..llm.cache import response_cache
        from .causal_prompts import CACHE_NAMESPACE

        client = make_client(backend, {"max_tokens": DEFAULT_MAX_TOKENS, **given})
        client.prepare()
        proposer = {**client.label(), "method": "trigger-target-json-v1"}
        cache = response_cache(cache_dir, CACHE_NAMESPACE, no_cache=no_cache, refresh=refresh)
        log(f"asking {backend} for triggers and targets of {len(chosen)} label(s)")
        proposals = propose_llm(client, cache, chosen, options)
    records = []
    with open_stream_writer(output, "probe", fmt, uncompressed, tool=tool, model=identity,
                            header_extra=header_extra(proposer, options, labels)) as writer:
        with progress("moe-probe: attributing") as bar:
            for record in evaluate(loaded.model, loaded.tokenizer, loaded.adapter, proposals, proposer, options,
                                   summary, on_label=lambda: bar.advance(1)):
                writer.write(record)
                records.append(record)
        writer.end_extra = {"summary": {"labels": summary.labels, "evaluated": summary.evaluated,
                                        "skipped": summary.skipped}}
    log(f"{summary.evaluated} of {summary.labels} label(s) attributed"
        + (f"; skipped {summary.skipped}" if summary.skipped else ""))
    if summary.evaluated:
        log(layer_table(records))
    else:
        warn("no label could be attributed (see the records' 'error')")
    return summary


__all__ = ["DEFAULT_MAX_TOKENS", "probe_causal"]
