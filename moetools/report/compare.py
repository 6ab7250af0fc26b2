"""``moe-report A… --compare B…``: one page of two runs of the same architecture (trained vs random-init,
base vs tuned, masked vs base, two label sets): every card, score and map shows A, B and Δ = B − A.

Both runs are read as separate reports (:func:`moetools.report.inputs.load_inputs`: each one model,
each checked as usual); they must have the same layers × experts (after folding shared routers),
else the comparison is refused, saying what differs: a Δ between experts of different models would
be a wrong number. Scores are compared key by key (the union of both runs' keys; a key one run lacks
is null there and its Δ null). With a trace on both sides the routing change is computed as paper
003 does ([003 eq. 4-5]): g_ij the mean router probability of expert j in layer i over the tokens
with a domain, shift_ij = (g_ij^B − g_ij^A)², RC its mean; and per layer the Jensen-Shannon
divergence (bits) between the two runs' mean router distributions over the layer's experts.
"""

from __future__ import annotations

import html
import math

import numpy as np

from ..errors import UsageError


def _shape(data) -> tuple[list, int | None]:
    return list(data.layers or []), data.num_experts


def check_comparable(a, b, names: tuple[str, str]) -> None:
    """UsageError naming what cannot be compared (different layers × experts, or no shape at all)."""
    for data, name in ((a, names[0]), (b, names[1])):
        layers, experts = _shape(data)
        if not layers or not experts:
            raise UsageError(f"cannot compare: {name} names no layers × experts (give its trace or scores stream)")
    (la, ea), (lb, eb) = _shape(a), _shape(b)
    if la != lb or ea != eb:
        raise UsageError(f"cannot compare {names[0]} with {names[1]}: {names[0]} has layers {la} × {ea} experts, "
                         f"{names[1]} layers {lb} × {eb}; a comparison needs the same layers × experts")


def _pooled(routing) -> np.ndarray:
    """(L, E) mean router probability over every token with a domain."""
    _, mass, tokens = routing.ordered()
    return mass.sum(axis=0) / max(float(tokens.sum()), 1.0)


def _jsd_bits(p: np.ndarray, q: np.ndarray) -> float:
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(x, y):
        keep = x > 0
        return float((x[keep] * np.log2(x[keep] / y[keep])).sum())
    return (kl(p, m) + kl(q, m)) / 2


def routing_change(a, b) -> dict | None:
    """``{"shift": (L, E), "rc": float, "jsd": {layer: bits}}`` when both runs have a trace with domains."""
    from ..score.metrics import routing_consistency

    if a.routing is None or b.routing is None or not a.routing.domains or not b.routing.domains:
        return None
    before, after = _pooled(a.routing), _pooled(b.routing)
    shift, rc = routing_consistency(before, after)
    jsd = {str(layer): (round(_jsd_bits(before[i], after[i]), 6) if before[i].sum() > 0 and after[i].sum() > 0
                        else None) for i, layer in enumerate(a.routing_layers)}
    return {"shift": shift, "rc": rc, "jsd": jsd, "layers": list(a.routing_layers)}


def merge_payloads(pa: dict, pb: dict, names: tuple[str, str], change: dict | None) -> dict:
    """A's payload with B beside it: ``keys`` the union, every expert's ``v`` A's values and ``b`` B's
    (``{"v", "lab", "by", "hf"}``), ``rs`` its routing shift; ``compare`` the page-wide comparison."""
    keys = sorted(set(pa["keys"]) | set(pb["keys"]))

    def align(entry, own_keys):
        if "v" not in entry:
            return None
        index = {key: i for i, key in enumerate(own_keys)}
        return [entry["v"][index[key]] if key in index else None for key in keys]

    b_entries = {(x["l"], x["e"]): x for x in pb["experts"]}
    a_entries = {(x["l"], x["e"]): x for x in pa["experts"]}
    row = {layer: i for i, layer in enumerate((change or {}).get("layers") or [])}
    merged = []
    for key in sorted(set(a_entries) | set(b_entries)):
        entry = dict(a_entries.get(key) or {"l": key[0], "e": key[1]})
        values = align(entry, pa["keys"])
        if values is not None:
            entry["v"] = values
        other = b_entries.get(key)
        if other is not None:
            entry["b"] = {name: other[name] for name in ("lab", "by", "hf") if name in other}
            other_values = align(other, pb["keys"])
            if other_values is not None:
                entry["b"]["v"] = other_values
        if change is not None and key[0] in row and key[1] < change["shift"].shape[1]:
            value = float(change["shift"][row[key[0]], key[1]])
            entry["rs"] = float(f"{value:.4g}") if math.isfinite(value) else None
        merged.append(entry)
    only = {"a": sorted(set(pa["keys"]) - set(pb["keys"])), "b": sorted(set(pb["keys"]) - set(pa["keys"]))}
    compare = {"a": names[0], "b": names[1], "only": only, "model_b": pb.get("model"),
               "health_b": pb.get("health")}
    if change is not None:
        compare["rc"] = float(f"{change['rc']:.6g}")
        compare["jsd"] = change["jsd"]
    return {**pa, "keys": keys, "experts": merged, "compare": compare,
            "title": f"{pa['title']} — {names[0]} vs {names[1]}"}


def compare_section(data_b, payload: dict, names: tuple[str, str]) -> str:
    """The comparison's own sections: RC and JSD per layer, what is in one run only, B's health panel and
    B's sets and eval tables."""
    from .build import row_labels
    from .evaltable import eval_table
    from .health import health_panel
    from .page import sets_table

    compare = payload["compare"]
    a, b = (html.escape(name) for name in names)
    parts = [(f"<section id=comparison><h2>Comparison: {a} → {b}</h2><p class=meta>every card, score and map "
              f"shows {a}, {b} and Δ = {b} − {a}; maps: choose A, B or Δ</p>")]
    if "rc" in compare:
        rows = "".join(f"<tr><th>{html.escape(row_labels(data_b, [int(layer)])[0])}</th><td>{value}</td></tr>"
                       for layer, value in compare["jsd"].items())
        parts.append(f"<p>routing change (paper 003 eq. 5, mean over experts of the squared change of the mean "
                     f"router probability): <b id=rc>RC = {compare['rc']:.4g}</b>; per expert shift on the cards "
                     f"and as a map</p><table class=health><tr><th>layer</th><th>JSD of the mean router "
                     f"distributions (bits)</th></tr>{rows}</table>")
    else:
        parts.append("<p class=meta>routing change (RC, JSD) not computed: it needs a trace on both sides</p>")
    for side, keys in (("a", compare["only"]["a"]), ("b", compare["only"]["b"])):
        if keys:
            parts.append(f"<p class=meta>only in {html.escape(compare[side])} (no Δ): "
                         f"{html.escape(', '.join(keys[:40]))}{' …' if len(keys) > 40 else ''}</p>")
    parts.append("</section>")
    panel = health_panel(data_b, payload["compare"].get("health_b"))
    parts.append(panel.replace("<section id=health><h2>Routing health", f"<section id=health-b><h2>Routing health "
                               f"of {b}", 1))
    for table in (sets_table(data_b), eval_table(data_b)):
        parts.append(table.replace("<h2>", f"<h2>{b}: ", 1))
    return "".join(parts)


__all__ = ["check_comparable", "compare_section", "merge_payloads", "routing_change"]
