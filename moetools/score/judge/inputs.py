"""What the judged scores read: the holdout sets of a samples stream and the labels to judge.

Samples (formats/samples.md): only ``holdout.positive`` (true activation 1) and ``holdout.negative``
(0) are scored; the ``explain`` sets are kept only as the fitting data of the offline scorer's
cut-off. A stream without a holdout set, or whose holdout shares a context id or a split region
(``doc_id``, ``region``) with the explain sets, is refused: the scorer must never see what the
explainer saw. Labels (formats/labels.md) must be about the same model (fingerprint) and must not
list a holdout context among the examples the explainer was shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import FormatError, ModelMismatchError

MONO = "mono"


def compact(context: dict) -> dict:
    """The fields of a context the scorers use (pieces for the prompt, meta for the domain)."""
    return {"id": str(context.get("id")), "pieces": [str(p) for p in context.get("pieces") or []],
            "meta": context.get("meta") or {}}


@dataclass
class ExpertSamples:
    layer: int
    expert: int
    positives: list[dict]            # holdout.positive, true activation 1
    negatives: list[dict]            # holdout.negative, true activation 0
    explain_positive: list[dict]     # explain.top + explain.weighted: the offline scorer's fitting data
    explain_negative: list[dict]     # explain.negative
    status: str = "ok"


def _check_disjoint(record: dict, where: str) -> None:
    explain = [c for name in ("top", "weighted", "negative") for c in (record.get("explain") or {}).get(name) or []]
    holdout = [c for name in ("positive", "negative") for c in (record.get("holdout") or {}).get(name) or []]
    ids = {str(c.get("id")) for c in explain}
    regions = {(str(c.get("doc_id")), c["region"]) for c in explain if c.get("region") is not None}
    for context in holdout:
        if str(context.get("id")) in ids:
            raise FormatError(f"{where}: holdout context {context.get('id')} is also in the explain set; "
                              "refusing to score on examples the explainer saw")
        region = (str(context.get("doc_id")), context.get("region"))
        if context.get("region") is not None and region in regions:
            raise FormatError(f"{where}: holdout context {context.get('id')} shares split region {region[1]} of "
                              f"document {region[0]} with the explain set; refusing to score on it")


def read_samples(reader, name: str = "samples") -> tuple[dict, dict[tuple[int, int], ExpertSamples]]:
    """(header, samples by (layer, expert)) of a samples stream with a holdout set."""
    header = reader.header
    split = header.get("split")
    if isinstance(split, dict) and not (split.get("holdout_fraction") or 0) > 0:
        raise FormatError(f"{name}: the samples stream has no holdout set (split.holdout_fraction is "
                          f"{split.get('holdout_fraction')}); rerun moe-sample with --holdout-fraction > 0")
    experts: dict[tuple[int, int], ExpertSamples] = {}
    for record in reader:
        if record.get("type") != "expert":
            continue
        layer, expert = int(record["layer"]), int(record["expert"])
        where = f"{name}: layer {layer} expert {expert}"
        holdout = record.get("holdout")
        if not isinstance(holdout, dict):
            raise FormatError(f"{where}: no holdout set; moe-score judges labels on held-out contexts only "
                              "(rerun moe-sample with --holdout-fraction > 0)")
        _check_disjoint(record, where)
        explain = record.get("explain") or {}
        experts[(layer, expert)] = ExpertSamples(
            layer, expert,
            positives=[compact(c) for c in holdout.get("positive") or []],
            negatives=[compact(c) for c in holdout.get("negative") or []],
            explain_positive=[compact(c) for name in ("top", "weighted") for c in explain.get(name) or []],
            explain_negative=[compact(c) for c in explain.get("negative") or []],
            status=str(record.get("status", "ok")))
    return header, experts


@dataclass
class LabelSet:
    """The labels of one prompt: ``key`` is ``mono`` (P_mono, self, offline: EMS) or a domain (EDMS)."""

    key: str
    prompt: dict
    explainer: dict | None
    path: str
    labels: dict[tuple[int, int], dict] = field(default_factory=dict)
    failed: int = 0                   # label records with status failed (not judged, counted)


def prompt_key(prompt: dict | None) -> str:
    prompt = prompt or {}
    return str(prompt["domain"]) if prompt.get("kind") == "domain" and prompt.get("domain") else MONO


def read_labels(reader, name: str, samples_header: dict, sets: dict[str, LabelSet]) -> None:
    """Add the labels of one labels stream to ``sets`` (by prompt key); refuse another model's labels."""
    mine = (reader.header.get("model") or {}).get("fingerprint")
    theirs = (samples_header.get("model") or {}).get("fingerprint")
    if mine and theirs and mine != theirs:
        raise ModelMismatchError(f"{name}: labels of another model ({mine}) than the samples ({theirs}); "
                                 "refusing to judge them")
    for record in reader:
        if record.get("type") != "label":
            continue
        key = prompt_key(record.get("prompt"))
        label_set = sets.setdefault(key, LabelSet(key, record.get("prompt") or {"kind": "mono", "domain": None},
                                                  record.get("explainer"), name))
        identity = (int(record["layer"]), int(record["expert"]))
        if identity in label_set.labels:
            raise FormatError(f"{name}: a second {key} label for layer {identity[0]} expert {identity[1]}; "
                              "give each expert one label per prompt")
        if record.get("status") != "ok" or not record.get("explanation"):
            label_set.failed += 1
            continue
        label_set.labels[identity] = {"explanation": str(record["explanation"]),
                                      "examples": [str(e) for e in record.get("examples") or []]}


def check_label_examples(label_sets: dict[str, LabelSet], samples: dict[tuple[int, int], ExpertSamples]) -> None:
    """A label whose explainer was shown a holdout context would be judged on what it saw: refuse."""
    for label_set in label_sets.values():
        for identity, label in label_set.labels.items():
            items = samples.get(identity)
            if items is None:
                continue
            held = {c["id"] for c in items.positives + items.negatives}
            shown = held.intersection(label["examples"])
            if shown:
                raise FormatError(f"{label_set.path}: the label of layer {identity[0]} expert {identity[1]} was "
                                  f"made from holdout context {min(shown)}; refusing to judge it on it")


__all__ = ["MONO", "ExpertSamples", "LabelSet", "check_label_examples", "compact", "prompt_key", "read_labels",
           "read_samples"]
