"""Layers that share one router: MONET's grouped routing, counted once.

MONET with ``moe_groups = G`` computes its routing probabilities in the first layer of every G
consecutive layers and reuses them in the next G − 1 ("the routing probabilities are reused every
4 layers", [004 App. B.1]); the paper counts experts per routing group ([004 Table 9]: experts
"across all routing groups"). Every layer of a group routes every token to the same composed
experts with the same gates, so routing statistics of the group's layers are one sample, not G.

The model identity (formats/README.md, formats/trace.md) lists such groups as
``shared_routers``: ``[[0, 1, 2, 3], ...]``, each list the decoder layers one router routes, the
layer holding the router first; only groups of two or more layers, absent when every MoE layer
has its own router. This module is the one place that reads it:

- :func:`router_groups` (model, adapter) for the identity; :func:`shared_routers` (identity) for readers;
- :class:`RouterFold`: a trace's sequence records with one row per router instead of per layer
  (moe-score, the demo's specialisation figures): routing arrays from the router's layer (checked
  equal on the others), per-layer expert outputs (``contribution``, ``logit_lens``) over the group;
- :func:`expand_to_groups`: an expert set acting on a router acts on every layer of its group
  (moe-mask, moe-tune), with the one-line note they print.
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError


def router_groups(model, adapter) -> list[list[int]]:
    """The MoE layers of a loaded model grouped by the router that routes them (one list per router)."""
    groups: dict[int, list[int]] = {}
    for layer in adapter.moe_layers():
        groups.setdefault(adapter.router_layer(layer.index), []).append(layer.index)
    return [sorted(members) for members in groups.values()]


def shared_routers(model: dict | None) -> list[list[int]]:
    """The identity's ``shared_routers`` (groups of two or more layers); [] when absent or malformed."""
    groups = (model or {}).get("shared_routers") if isinstance(model, dict) else None
    if not isinstance(groups, list):
        return []
    return [[int(x) for x in group] for group in groups
            if isinstance(group, list) and len(group) >= 2 and all(isinstance(x, int) for x in group)]


def identity_field(groups: list[list[int]]) -> dict:
    """``{"shared_routers": [...]}`` for the identity when some router routes several layers, else {}."""
    shared = [sorted(group) for group in groups if len(group) >= 2]
    return {"shared_routers": shared} if shared else {}


def layer_span(group: list[int]) -> str:
    """``0-3`` for consecutive layers, else ``0,2,5``."""
    ordered = sorted(group)
    if len(ordered) > 1 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(str(x) for x in ordered)


def describe(groups: list[list[int]]) -> str:
    """``layers 0-3 share one router`` (one clause per group)."""
    return "; ".join(f"layers {layer_span(group)} share one router" for group in groups)


class RouterFold:
    """One row per router for trace arrays whose L axis is the header's ``layers``.

    ``layers``: the router layers, in trace order (the first of each group present in the trace);
    ``members``: router layer -> the trace layers it routes (itself first).
    """

    def __init__(self, trace_layers: list[int], groups: list[list[int]]):
        position = {int(layer): i for i, layer in enumerate(trace_layers)}
        leader = {}
        for group in groups:
            present = [layer for layer in sorted(group) if layer in position]
            for layer in present:
                leader[layer] = present[0]
        self.layers: list[int] = []
        self.members: dict[int, list[int]] = {}
        for layer in trace_layers:
            head = leader.get(int(layer), int(layer))
            if head not in self.members:
                self.layers.append(head)
                self.members[head] = []
            self.members[head].append(int(layer))
        self._rows = [[position[m] for m in self.members[head]] for head in self.layers]

    @classmethod
    def from_header(cls, header: dict) -> RouterFold | None:
        """The fold a trace header asks for, or None when no two of its layers share a router."""
        groups = shared_routers(header.get("model"))
        if not groups:
            return None
        fold = cls(list(header.get("layers") or []), groups)
        return fold if any(len(m) > 1 for m in fold.members.values()) else None

    @property
    def shared(self) -> dict[int, list[int]]:
        """Router layer -> the layers it routes, for routers that route several layers of the trace."""
        return {head: members for head, members in self.members.items() if len(members) > 1}

    def record(self, record: dict) -> dict:
        """A copy of a ``sequence`` record with one row per router (formats/scores.md, *Shared routers*).

        ``experts``, ``gates``, ``prob_sum``: the router layer's (the others must route alike, or
        FormatError); ``contribution``: summed over the group's layers (the composed expert's writes
        into the residual stream in each of them); ``logit_lens``: the group's layers' top-J tokens
        side by side (J·G per slot).
        """
        experts = record["experts"]
        heads = [rows[0] for rows in self._rows]
        for rows, head in zip(self._rows, self.layers):
            for row in rows[1:]:
                if not np.array_equal(experts[row], experts[rows[0]]):
                    raise FormatError(f"sequence {record.get('doc_id')!r}: layers {head} and "
                                      f"{self.members[head][rows.index(row)]} are said to share one router "
                                      "(model.shared_routers) but route differently")
        folded = dict(record)
        folded["experts"] = experts[heads]
        folded["gates"] = record["gates"][heads]
        folded["prob_sum"] = record["prob_sum"][heads]
        contribution = np.asarray(record["contribution"], dtype=np.float32)
        folded["contribution"] = np.stack([contribution[rows].sum(axis=0) for rows in self._rows])
        lens = record.get("logit_lens")
        if lens is not None:
            folded["logit_lens"] = np.stack([np.concatenate([lens[r] for r in rows], axis=-1) for rows in self._rows])
        return folded


def expand_to_groups(experts: dict[int, list[int]], groups: list[list[int]],
                     action: str = "masking") -> tuple[dict[int, list[int]], str]:
    """``{layer: ids}`` with each shared router's ids applied to every layer of its group (the union of
    what the set names for any of them), and the note to print ('' when no group is touched)."""
    expanded = {int(layer): sorted({int(i) for i in ids}) for layer, ids in experts.items()}
    touched = []
    for group in groups:
        ids = sorted({i for layer in group for i in expanded.get(layer, ())})
        if not ids:
            continue
        touched.append(group)
        for layer in group:
            expanded[layer] = ids
    if not touched:
        return expanded, ""
    return expanded, (f"{describe(touched)}: {action} a composed expert of a shared router acts on every "
                      "layer of its group")


__all__ = ["RouterFold", "describe", "expand_to_groups", "identity_field", "layer_span", "router_groups",
           "shared_routers"]
