"""``moe-probe neurons``: k-sparse probing of expert (or dense FFN) neurons over a corpus (paper 002).

One pass over the corpus: each window's forward pass records h per (token, routed
expert) (:mod:`moetools.probe.hidden`), each token gets its concept labels
(:mod:`moetools.probe.concepts`), and per (layer, expert) we keep streaming sums over
training documents and reservoir samples of training and test rows
(:mod:`moetools.probe.stats`). Then, per (concept, layer, expert) with at least
``min_count`` positives and negatives among the tokens routed to it, and per k, the
probe of :mod:`moetools.probe.regression` is fitted on the training sample and scored
on the test sample.

Split: a document is a test document when sha256("seed:doc_id") / 2^64 < test_fraction
(25 % by default, paper 002's 75/25), so no token of a test document is ever in a
training statistic. Best layer/expert per (concept, k): the highest *training* F1
(ties: lowest layer, then expert), reported with its test F1.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ..corpus.tokenize import token_pieces
from ..errors import UsageError
from ..trace.corpus import batches, windows_of_pieces
from .concepts import DEFAULT_DOMAINS, ConceptLabeller, read_concept_file  # noqa: F401 (re-exported)
from .regression import DEFAULT_C, DEFAULT_KS, fit_probe, top_neurons
from .stats import LayerStats

SKIP_REASONS = ("few-examples", "one-class-sample")


@dataclass
class ProbeOptions:
    ks: tuple[int, ...] = DEFAULT_KS
    min_count: int = 50  # paper 002: concepts with fewer positives or negatives for an expert are skipped
    test_fraction: float = 0.25
    reservoir: int = 2048  # training rows kept per (layer, expert); the test sample keeps a third of it
    max_length: int = 256
    batch_tokens: int = 2048
    seed: int = 0
    c: float = DEFAULT_C
    domains: tuple[str, ...] = DEFAULT_DOMAINS
    concepts: tuple[str, ...] | None = None
    domain_field: str = "domain"
    shuffle_labels: bool = False  # control: each token gets the labels of a random token of its batch

    def check(self) -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            raise UsageError("--k takes positive integers")
        if not 0 < self.test_fraction < 1:
            raise UsageError("--test-fraction must be in (0, 1)")


@dataclass
class ProbeSummary:
    documents: int = 0
    test_documents: int = 0
    tokens: int = 0
    test_tokens: int = 0
    probes: int = 0
    concept_file_documents: int = 0  # documents of the corpus the concept file labels
    skipped: dict = field(default_factory=lambda: {reason: 0 for reason in SKIP_REASONS})

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def is_test_document(doc_id: str, seed: int, test_fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


def _windows(documents, tokenizer, options: ProbeOptions, summary: ProbeSummary, user_labels: dict):
    for document in documents:
        test = is_test_document(document.doc_id, options.seed, options.test_fraction)
        summary.documents += 1
        summary.test_documents += test
        previous = None  # the last token id of the document's previous window (for line_start)
        tokens = 0
        for window in windows_of_pieces(document, token_pieces(document.text, tokenizer), options.max_length):
            window.meta = {**document.meta, "_test": test, "_previous": previous}
            previous = int(window.token_ids[-1])
            tokens = window.offset + len(window.token_ids)
            yield window
        labelled = user_labels.get(document.doc_id)
        if labelled is not None:
            summary.concept_file_documents += 1
            last = max((max(positions) for positions in labelled.values() if positions), default=-1)
            if last >= tokens:
                raise UsageError(f"the concept file does not align with the tokenizer: document "
                                 f"{document.doc_id!r} has {tokens} tokens but position {last} is labelled")


def collect(model, tokenizer, adapter, documents, options: ProbeOptions, on_batch=None, user_labels=None):
    """One pass: (labeller, {layer: LayerStats}, summary). ``user_labels``: :func:`read_concept_file`'s."""
    import torch

    from .hidden import HiddenCapture

    user_labels = user_labels or {}
    labeller = ConceptLabeller(tokenizer, options.domains, options.concepts, user_labels)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model.get_input_embeddings().weight.device
    rng = np.random.default_rng(options.seed)
    summary = ProbeSummary()
    layers: dict[int, LayerStats] = {}
    with HiddenCapture(model, adapter) as capture, torch.no_grad():
        windows = _windows(documents, tokenizer, options, summary, user_labels)
        for batch in batches(windows, batch_tokens=options.batch_tokens, batch_size=None, sort_buffer=64):
            seq_len = max(len(window.token_ids) for window in batch)
            ids = np.full((len(batch), seq_len), pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), seq_len), dtype=bool)
            labels = np.zeros((len(batch), seq_len, len(labeller.names)), dtype=bool)  # (B, T, C)
            is_test = np.zeros((len(batch), seq_len), dtype=bool)
            for row, window in enumerate(batch):
                count = len(window.token_ids)
                ids[row, :count], mask[row, :count] = window.token_ids, True
                previous = window.meta["_previous"]
                labels[row, :count] = labeller.labels(window.token_ids, window.offset, window.meta,
                                                      options.domain_field,
                                                      None if previous is None else labeller.text(previous),
                                                      window.doc_id)
                is_test[row, :count] = window.meta["_test"]
            real = mask.reshape(-1)  # (N,)
            flat_labels = labels.reshape(-1, labels.shape[-1])[real]  # (n, C)
            if options.shuffle_labels:
                flat_labels = flat_labels[rng.permutation(flat_labels.shape[0])]
            flat_test = is_test.reshape(-1)[real]
            summary.tokens += int(real.sum())
            summary.test_tokens += int(flat_test.sum())
            model(input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).long().to(device),
                  use_cache=False)
            for layer, unit_ids, hidden in capture.take():
                slots = unit_ids.shape[1]
                unit_ids = unit_ids.numpy()[real].reshape(-1)  # (n·K,)
                hidden = hidden.numpy()[real].reshape(unit_ids.shape[0], -1)  # (n·K, I)
                if layer not in layers:
                    units = adapter_units(adapter, layer)
                    layers[layer] = LayerStats(units, hidden.shape[1], len(labeller.names), options.reservoir,
                                               max(1, options.reservoir // 3), options.seed + layer)
                layers[layer].add(unit_ids, hidden, np.repeat(flat_labels, slots, axis=0),
                                  np.repeat(flat_test, slots))
            if on_batch is not None:
                on_batch(len(batch))
    return labeller, layers, summary


def adapter_units(adapter, layer_index: int) -> int:
    if adapter is None:
        return 1
    return next(layer.num_experts for layer in adapter.moe_layers() if layer.index == layer_index)


def probe_records(labeller, layers: dict[int, LayerStats], options: ProbeOptions, summary: ProbeSummary,
                  dense: bool) -> list[dict]:
    """``probe`` records per (concept, layer, unit, k), then ``best`` records per (concept, k)."""
    records, best = [], {}
    for layer_index, stats in sorted(layers.items()):
        for unit in range(stats.units):
            train_x_all, train_y_all = stats.train.rows(unit)
            test_x_all, test_y_all = stats.test.rows(unit)
            for concept, name in enumerate(labeller.names):
                positives = int(stats.positives[:, unit, concept].sum())
                negatives = int(stats.count[:, unit].sum()) - positives
                if positives < options.min_count or negatives < options.min_count:
                    summary.skipped["few-examples"] += 1
                    continue
                train_y, test_y = train_y_all[:, concept], test_y_all[:, concept]
                if stats.positives[0, unit, concept] in (0, stats.count[0, unit]) or len(set(train_y)) < 2 \
                        or len(set(test_y)) < 2:
                    summary.skipped["one-class-sample"] += 1
                    continue
                ranking = top_neurons(stats.mean_difference(unit, concept), max(options.ks))
                for k in options.ks:
                    if k > stats.width:
                        continue
                    neurons = ranking[:k]
                    train_f1, test_f1 = fit_probe(train_x_all[:, neurons], train_y, test_x_all[:, neurons], test_y,
                                                  options.c)
                    summary.probes += 1
                    record = {"type": "probe", "concept": name, "layer": layer_index,
                              "expert": None if dense else unit, "k": k, "neurons": [int(n) for n in neurons],
                              "train_f1": round(train_f1, 6), "test_f1": round(test_f1, 6),
                              "train_positives": int(train_y.sum()), "train_negatives": int((~train_y).sum()),
                              "test_positives": int(test_y.sum()), "test_negatives": int((~test_y).sum())}
                    records.append(record)
                    key = (name, k)
                    if key not in best or train_f1 > best[key]["train_f1"]:
                        best[key] = record
    for (name, k), record in sorted(best.items(), key=lambda item: (labeller.names.index(item[0][0]), item[0][1])):
        records.append({"type": "best", "concept": name, "k": k, "layer": record["layer"],
                        "expert": record["expert"], "train_f1": record["train_f1"], "test_f1": record["test_f1"]})
    return records


def dense_identity(model, path) -> dict:
    """The header's model identity for a dense model (``model_identity`` needs an MoE adapter)."""
    from pathlib import Path

    from ..models.identity import fingerprint
    from .hidden import dense_mlps

    config = model.config
    return {"name": Path(path).name, "path": str(Path(path).resolve()), "model_type": config.model_type,
            "num_layers": len(dense_mlps(model)), "moe_layers": [], "fingerprint": fingerprint(config, path, model)}


def header_extra(labeller, options: ProbeOptions, dense: bool, corpus: str) -> dict:
    return {"corpus": corpus, "arch": "dense" if dense else "moe",
            "concepts": [{"name": c.name, "description": c.description} for c in labeller.concepts],
            "ks": list(options.ks), "min_count": options.min_count,
            "split": {"by": "document", "test_fraction": options.test_fraction, "seed": options.seed},
            "reservoir": options.reservoir, "max_length": options.max_length,
            "regression": {"library": "scikit-learn", "model": "LogisticRegression", "penalty": "l2", "C": options.c,
                           "class_weight": "balanced", "standardised": True},
            "shuffled_labels": options.shuffle_labels}


def summary_line(summary: ProbeSummary) -> str:
    skipped = ", ".join(f"{count} {reason}" for reason, count in summary.skipped.items())
    return (f"{summary.documents} documents ({summary.test_documents} test), {summary.tokens} tokens, "
            f"{summary.probes} probes fitted; skipped (concept, layer, expert): {skipped}")


def best_table(records: list[dict]) -> str:
    """Test F1 of the best layer/expert per concept (rows) and k (columns), as text."""
    rows = [record for record in records if record["type"] == "best"]
    ks = sorted({record["k"] for record in rows})
    concepts = list(dict.fromkeys(record["concept"] for record in rows))
    cells = {(record["concept"], record["k"]): record["test_f1"] for record in rows}
    width = max([len("concept")] + [len(name) for name in concepts])
    lines = ["concept".ljust(width) + "".join(f"  k={k:<4}" for k in ks)]
    for name in concepts:
        lines.append(name.ljust(width) + "".join(
            f"  {cells[(name, k)]:.3f} " if (name, k) in cells else "    -   " for k in ks))
    return "\n".join(lines)
