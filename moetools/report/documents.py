"""The page's document view: a few traced documents, token by token, with the experts each token went
to in every layer (one row per router) and their gates: the view [004 §5] and OLMoE's paper use to
show specialisation. Bounded: the first ``ReportOptions.documents`` documents of the trace, or the
ones listed (``ReportOptions.document_ids``), each cut to ``ReportOptions.document_tokens`` tokens
(windows of one document are joined in trace order).

The data block's ``docs`` (formats/report.md): per document ``id``, ``dom``, ``p`` (pieces, T),
``x`` (per router row, the T·K expert ids of its tokens, token-major) and ``g`` (the gates, same
order, 3 significant digits).
"""

from __future__ import annotations

import numpy as np


class DocumentPicker:
    """Collects the chosen documents' tokens and routing from sequence records (already folded to one
    row per router) as the trace is read; memory bounded by documents × tokens × layers × K."""

    def __init__(self, count: int, ids=None, tokens: int = 256):
        self.count, self.ids, self.tokens = int(count), (list(ids) if ids else None), int(tokens)
        self.docs: dict[str, dict] = {}

    def wants(self, doc_id: str) -> bool:
        if doc_id in self.docs:
            return len(self.docs[doc_id]["p"]) < self.tokens
        if self.ids is not None:
            return doc_id in self.ids
        return len(self.docs) < self.count

    def add(self, record: dict) -> None:
        if record.get("type", "sequence") != "sequence":
            return
        doc_id = str(record.get("doc_id"))
        if not self.wants(doc_id):
            return
        entry = self.docs.setdefault(doc_id, {"id": doc_id, "dom": (record.get("meta") or {}).get("domain"),
                                              "p": [], "x": None, "g": None})
        room = self.tokens - len(entry["p"])
        experts = np.asarray(record["experts"])[:, :room]          # (L, T, K)
        gates = np.asarray(record["gates"], dtype=np.float64)[:, :room]
        pieces = record.get("pieces") or [str(int(t)) for t in np.asarray(record["tokens"])]
        entry["p"] += [str(piece) for piece in pieces[:room]]
        if entry["x"] is None:
            entry["x"] = [[] for _ in range(experts.shape[0])]
            entry["g"] = [[] for _ in range(experts.shape[0])]
        for row in range(experts.shape[0]):
            entry["x"][row] += [int(e) for e in experts[row].ravel()]
            entry["g"][row] += [float(f"{g:.3g}") for g in gates[row].ravel()]

    def result(self) -> list[dict]:
        """The documents in trace order (those listed: in the order listed)."""
        order = self.ids if self.ids is not None else list(self.docs)
        return [self.docs[doc_id] for doc_id in order if doc_id in self.docs]

    def missing(self) -> list[str]:
        """Listed documents the trace does not hold."""
        return [doc_id for doc_id in (self.ids or []) if doc_id not in self.docs]


__all__ = ["DocumentPicker"]
