"""The page's routing health: moe-score's ``summary.health`` (formats/scores.md *Routing health*), or
the same numbers computed from the trace when no scores stream is given (``moetools.score.health``).

:func:`routing_health` gives the payload's ``health`` (per layer, thresholds) and each expert's flags
(the badge on its card); :func:`health_panel` the overview panel listing the flagged layers.
"""

from __future__ import annotations

import html

#: at most this many expert links per cell of the panel (the rest counted)
LINKS = 24


def _flags_from_scores(data) -> dict:
    flags = {}
    for key, card in data.cards.items():
        health = card.scores.get("health") if isinstance(card.scores.get("health"), dict) else {}
        marks = [word for name, word in (("dead", "dead"), ("always_on", "always-on")) if health.get(name)]
        if marks:
            flags[key] = marks
    return flags


def routing_health(data) -> tuple[dict | None, dict]:
    """(payload ``health`` or None, {(layer, expert): [flag words]})."""
    from ..score import health as H

    summary = (data.scores_summary or {}).get("health")
    if isinstance(summary, dict) and isinstance(summary.get("layers"), dict):
        health, flags = {"source": "scores", **summary}, _flags_from_scores(data)
    elif data.routing is not None and getattr(data.routing, "routed", None) is not None and data.top_k:
        tokens = float(sum(data.routing.tokens.values()))
        per_expert, summary = H.summary(data.routing.routed, tokens, int(data.top_k), data.routing_layers)
        health, flags = {"source": "trace", **summary}, {}
        for row, layer in enumerate(data.routing_layers):
            for name, word in (("dead", "dead"), ("always_on", "always-on")):
                for expert in (per_expert[name][row] == 1).nonzero()[0]:
                    flags.setdefault((int(layer), int(expert)), []).append(word)
    else:
        return None, {}
    for layer, entry in health["layers"].items():
        if entry.get("collapsed"):
            for expert in range(data.num_experts or 0):
                flags.setdefault((int(layer), expert), []).append("collapsed layer")
    return health, flags


def _links(layer, experts) -> str:
    if experts is None:
        return "<span class=meta>not judged</span>"
    shown = "".join(f'<a class=eid href="#{layer}/{e}">{e}</a> ' for e in experts[:LINKS])
    return f"{len(experts)}: {shown}" + (f"… (+{len(experts) - LINKS})" if len(experts) > LINKS else "") \
        if experts else "0"


def health_panel(data, health: dict | None) -> str:
    """The overview panel: one row per router layer, the flagged ones marked and listed first in words."""
    from ..score.health import flagged
    from .build import row_labels

    if not health:
        return ""
    rows, flagged_lines = [], []
    for layer, entry in health["layers"].items():
        name = row_labels(data, [int(layer)])[0]
        words = flagged(entry)
        if words:
            flagged_lines.append(f"<li>layer {html.escape(name)}: {html.escape(', '.join(words))}</li>")
        top = entry.get("max_expert")
        top_link = "–" if top is None else f'{entry["max_share"]} (<a class=eid href="#{layer}/{top}">{top}</a>)'
        rows.append(f"<tr class='{'flagged' if words else 'ok'}' data-layer='{layer}'><th>{html.escape(name)}</th>"
                    f"<td>{entry.get('entropy')}</td><td>{entry.get('entropy_norm')}</td><td>{top_link}</td>"
                    f"<td style='text-align:left'>{_links(layer, entry.get('dead'))}</td>"
                    f"<td style='text-align:left'>{_links(layer, entry.get('always_on'))}</td>"
                    f"<td>{'collapsed' if entry.get('collapsed') else ('flagged' if words else 'ok')}</td></tr>")
    t = health.get("thresholds") or {}
    thresholds = (f"dead: routed fewer than {t.get('dead_below', 0) * 100:g}% of the tokens a uniform router would "
                  f"send it (judged where that is ≥ {t.get('min_expected')} tokens); always-on: in the top-"
                  f"{health.get('top_k')} of ≥ {t.get('always_on', 0) * 100:g}% of tokens; collapsed: load entropy / "
                  f"log2 E < {t.get('collapsed_below')}")
    verdict = (f"<ul class=flagged-layers>{''.join(flagged_lines)}</ul>" if flagged_lines
               else "<p class=meta>no layer flagged</p>")
    return ("<section id=health><h2>Routing health</h2>"
            f"<p class=meta>over {health.get('tokens')} tokens ({'moe-score' if health['source'] == 'scores' else 'the trace'}"
            f"); {html.escape(thresholds)}</p>{verdict}"
            "<table class=health><tr><th>layer</th><th>load entropy (bits)</th><th>/ log2 E</th><th>max share (expert)"
            f"</th><th>dead</th><th>always-on</th><th>status</th></tr>{''.join(rows)}</table></section>")


__all__ = ["health_panel", "routing_health"]
