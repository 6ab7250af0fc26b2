"""The overview's layer × expert maps, drawn by the page (maps.js) from the inline data: which maps,
what each value is, which rows.

A map is a spec in the data block's ``maps`` (formats/report.md): its values are the experts' own
``v`` entries (a score key; one key per domain for a per-domain metric, chosen in the page) or
``h`` entries (the trace's mean router probability per domain), so a map costs no bytes beyond the
cards' data. The page paints one pixel per (router, expert) on a canvas scaled to the width (or
zoomed, for ≥ 1,024 experts per layer), shows layer, expert, value and label on hover and opens the
expert's card on click.
"""

from __future__ import annotations

#: per-domain metrics drawn as maps, in this order, when the scores have them
DOMAIN_MAPS = ("das", "af", "edms", "edmrs")
#: expert-level values drawn as maps (skew.ratio as log2; health.share: the routing health's load share)
EXPERT_MAPS = ("health.share", "skew.ratio", "ems", "f1", "pearson", "jsd_routing", "jsd_functional")


def _caption(name: str, definition: str, shared: str) -> str:
    return f"{name}{f' ({definition})' if definition else ''}{shared}"


def map_specs(data, payload: dict) -> list[dict]:
    """``[{"title", "caption", "src": "v"|"h"|"rs", "keys": [[choice, key or index], ...], "div", "log2"}]``."""
    from .build import shared_caption

    keys, domains, shared = payload["keys"], payload["domains"], shared_caption(data)
    definitions = {name: (spec or {}).get("definition", "")
                   for name, spec in ((data.scores_header or {}).get("metrics") or {}).items()}
    specs = []
    for metric in DOMAIN_MAPS:
        present = [[domain, f"{metric}:{domain}"] for domain in domains if f"{metric}:{domain}" in keys]
        if present:
            specs.append({"title": metric, "caption": _caption(f"{metric} per layer × expert, one domain at a time",
                                                               definitions.get(metric, ""), shared),
                          "src": "v", "keys": present, "div": metric == "das", "log2": False})
    for key in EXPERT_MAPS:
        if key in keys:
            name = key.partition(".")[0]
            title = {"skew.ratio": "log2 skew ratio (top domain / runner-up; 1 = MONET's 2x)",
                     "health.share": "share of the layer's routing slots (routing health; uniform = 1/E)"}.get(key, key)
            definition = "" if name == "health" else definitions.get(name, "")
            specs.append({"title": title, "caption": _caption(title, definition, shared),
                          "src": "v", "keys": [[key, key]], "div": False, "log2": key == "skew.ratio"})
    if not specs and payload.get("histogram", "").endswith("(trace)") and domains:
        specs.append({"title": "mean router probability", "caption": "mean router probability per layer × expert, "
                      f"one domain at a time (trace){shared}", "src": "h",
                      "keys": [[domain, index] for index, domain in enumerate(domains)], "div": False, "log2": False})
    if any("rs" in x for x in payload["experts"]):
        specs.append({"title": "routing change (003 eq. 4: squared change of the mean router probability)",
                      "caption": f"routing change shift_ij between the two runs{shared}", "src": "rs",
                      "keys": [["shift", "rs"]], "div": False, "log2": False})
    return specs


def rows(data, layers: list) -> list[str]:
    """The maps' row names: one per router, ``0-3`` for a router of layers 0 to 3."""
    from .build import row_labels

    return row_labels(data, layers)


__all__ = ["DOMAIN_MAPS", "EXPERT_MAPS", "map_specs", "rows"]
