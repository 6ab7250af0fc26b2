"""Turn :class:`~moetools.report.inputs.ReportData` into the page's inline JSON and overview figures.

The inline JSON (formats/report.md) is columnar where it repeats: the score names are listed once
(``keys``) and each expert carries ``v``, its values in that order, so an expert costs its numbers,
not their names.
"""

from __future__ import annotations

import html

import numpy as np

from .inputs import ReportData, _round


def flat_scores(record: dict) -> dict[str, float]:
    """One scores record as ``{name: number}``: ``metric:domain`` per domain, ``skew.ratio``, ``pearson``..."""
    flat: dict[str, float] = {}
    for domain, metrics in (record.get("domains") or {}).items():
        for name, value in (metrics or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{name}:{domain}"] = value
    for name, value in record.items():
        if name in ("type", "layer", "expert", "domains"):
            continue
        if isinstance(value, bool):
            flat[name] = int(value)
        elif isinstance(value, (int, float)):
            flat[name] = value
        elif isinstance(value, dict):
            for inner, number in value.items():
                if isinstance(number, bool):
                    flat[f"{name}.{inner}"] = int(number)
                elif isinstance(number, (int, float)):
                    flat[f"{name}.{inner}"] = number
    return flat


def _domains(data: ReportData) -> list[str]:
    if data.scores_header and data.scores_header.get("domains"):
        return list(data.scores_header["domains"])
    if data.routing is not None and data.routing.domains:
        return data.routing.ordered()[0]
    seen: list[str] = []
    for card in data.cards.values():
        for context in card.contexts:
            if context.get("dom") is not None and context["dom"] not in seen:
                seen.append(context["dom"])
    return seen


def _histograms(data: ReportData, domains: list[str]) -> tuple[str, dict]:
    """Per expert a value per domain: mean router probability from the scores, else from the trace."""
    if any("prob" in (metrics or {}) for card in data.cards.values()
           for metrics in (card.scores.get("domains") or {}).values()):
        return "mean router probability per token (scores)", {
            key: [((card.scores.get("domains") or {}).get(d) or {}).get("prob") for d in domains]
            for key, card in data.cards.items()}
    if data.routing is not None and data.routing.shape is not None:
        names, probability = data.routing.mean_probability()  # (D, L, E)
        index = {layer: row for row, layer in enumerate(data.routing_layers)}
        order = [names.index(d) if d in names else None for d in domains]
        result = {}
        for layer, expert in data.cards:
            row = index.get(layer)
            if row is not None and expert < probability.shape[2]:
                result[(layer, expert)] = [None if o is None else float(probability[o, row, expert]) for o in order]
        return "mean router probability per token (trace)", result
    result = {}
    for key, card in data.cards.items():
        if card.contexts:
            result[key] = [sum(1 for c in card.contexts if c.get("dom") == d) for d in domains]
    return "top contexts per domain (samples)", result


def ensure_trace_cards(data: ReportData) -> None:
    """With a trace (or scores) but no per-expert inputs, every (layer, expert) still gets a card."""
    if data.cards or not data.layers or not data.num_experts:
        return
    for layer in data.layers:
        for expert in range(data.num_experts):
            data.card(layer, expert)


def _explainer(label: dict) -> str:
    explainer = label.get("explainer") or {}
    backend, model = explainer.get("backend"), explainer.get("model")
    prompt = label.get("prompt") or {}
    return f"{backend}{f' ({model})' if model else ''}" + (
        f" · P_domain({prompt['domain']})" if prompt.get("kind") == "domain" and prompt.get("domain") else "") + (
        f" — {explainer['method']}" if backend == "offline" and explainer.get("method") else "")


def _label_rank(label: dict) -> tuple:
    """An LLM's label first, then a self-explanation, then the offline method's (then by explainer: stable)."""
    backend = (label.get("explainer") or {}).get("backend")
    return ({"offline": 2, "self": 1}.get(backend, 0), label.get("status") != "ok", _explainer(label))


def _label_entry(label: dict) -> dict:
    entry = {"lab": label.get("explanation"), "st": label.get("status"), "by": _explainer(label)}
    if label.get("error"):
        entry["err"] = label["error"]
    evidence = label.get("evidence") if isinstance(label.get("evidence"), dict) else None
    if evidence is not None:
        from ..explain.evidence import (
            evidence_text,  # the explain package is not needed to read reports otherwise
        )

        entry["ev"] = evidence_text(evidence)
        if evidence.get("flag"):
            entry["flag"] = evidence["flag"]
    return entry


def scorer_name(header: dict | None) -> str | None:
    """The judged scores' scorer in words (the header's ``scorer``, formats/scores.md)."""
    scorer = (header or {}).get("scorer")
    if not isinstance(scorer, dict):
        return None
    if scorer.get("kind") == "embedding":
        return f"embedding scorer ({scorer.get('model')}): {scorer.get('method')}"
    backend, model = scorer.get("backend"), scorer.get("model")
    return f"LLM scorer {backend}{f' ({model})' if model else ''}" + (
        f", prompt {scorer['prompt']}" if scorer.get("prompt") else "")


def verdict_rows(scores: dict) -> list:
    """Every prompt's verdicts, compact (formats/report.md ``jv``): ``[prompt, scorer, threshold, rows, label's
    explainer]``, a row ``[y, index, repeats saying 1, repeats answered]``, holdout positives first."""
    from .inputs import verdict_counts

    out = []
    judged = scores.get("judged") if isinstance(scores.get("judged"), dict) else {}
    for key in sorted(judged, key=lambda k: (k != "mono", k)):
        provenance = judged[key] or {}
        verdicts = provenance.get("verdicts")
        if not isinstance(verdicts, list) or not verdicts:
            continue
        rows = [[int(v.get("y") or 0), v.get("index"), *verdict_counts(v)] for v in verdicts if isinstance(v, dict)]
        explainer = provenance.get("explainer") if isinstance(provenance.get("explainer"), dict) else {}
        label_by = explainer.get("backend") and f"{explainer['backend']}" + (
            f" ({explainer['model']})" if explainer.get("model") else "")
        out.append([key, provenance.get("scorer"), _round(provenance.get("threshold")), rows, label_by or None])
    return out


def payload(data: ReportData, title: str) -> dict:
    """The page's inline JSON (formats/report.md)."""
    ensure_trace_cards(data)
    domains = _domains(data)
    flats = {key: flat_scores(card.scores) for key, card in data.cards.items() if card.scores}
    keys = sorted({name for flat in flats.values() for name in flat})
    histogram_kind, histograms = _histograms(data, domains)
    from .health import routing_health

    health, health_flags = routing_health(data)
    membership: dict = {}
    for index, (_, chosen) in enumerate(data.sets):
        for pair in chosen.pairs():
            membership.setdefault(pair, []).append(index)
    experts = []
    for key in sorted(data.cards):
        card = data.cards[key]
        entry: dict = {"l": card.layer, "e": card.expert}
        if card.labels:
            first, *others = sorted(card.labels, key=_label_rank)
            entry.update(_label_entry(first))
            if others:
                entry["more"] = [_label_entry(label) for label in others]
        if key in flats:
            entry["v"] = [_round(flats[key].get(name), 4) for name in keys]
            if isinstance(card.scores.get("skew"), dict) and card.scores["skew"].get("domain") is not None:
                entry["sd"] = card.scores["skew"]["domain"]
        verdicts = verdict_rows(card.scores) if card.scores else []
        if verdicts:
            entry["jv"] = verdicts
        if key in histograms:
            entry["h"] = [_round(value, 3) for value in histograms[key]]
        scale = _quantise(card.contexts + card.holdout)
        if scale:
            entry["as"] = scale
        if card.contexts:
            entry["c"] = card.contexts
        if card.holdout:
            entry["ho"] = card.holdout
        if card.logit_lens:
            entry["ll"] = card.logit_lens
        if card.sample_status and card.sample_status != "ok":
            entry["ss"] = card.sample_status
        if card.sample_stats and card.sample_stats.get("firing_tokens") is not None:
            entry["ft"] = card.sample_stats["firing_tokens"]
        if key in membership:
            entry["sets"] = membership[key]
        if key in health_flags:
            entry["hf"] = health_flags[key]
        experts.append(entry)
    layers = data.layers or sorted({layer for layer, _ in data.cards})
    content = {"version": 1, "title": title, "model": data.model, "domains": domains, "keys": keys,
            "histogram": histogram_kind, "layers": data.layers, "num_experts": data.num_experts,
            "sets": [{"name": name, "size": len(chosen), "criterion": chosen.provenance.get("criterion")}
                     for name, chosen in data.sets],
            "sources": data.sources, "scorer": scorer_name(data.scores_header),
            "verdicts_unmatched": data.verdicts_unmatched, "health": health, "experts": experts}
    from .maps import map_specs, rows

    content["maps"], content["rows"] = map_specs(data, content), rows(data, layers)
    content["map_layers"] = layers
    if data.docs:
        content["docs"] = data.docs
        content["doc_layers"], content["doc_rows"] = data.routing_layers, row_labels(data, data.routing_layers)
        content["top_k"] = data.top_k
    return content


def _quantise(contexts: list[dict]) -> float | None:
    """Activations as integer percent of the expert's largest one (in place); returns that largest one.

    Two or three characters a token instead of six to ten: the shading needs no more, and the
    exact value of the strongest token stays in ``as`` (formats/report.md).
    """
    largest = max((abs(value) for context in contexts for value in context["a"]), default=0.0)
    if not largest:
        for context in contexts:
            context["a"] = [0] * len(context["a"])
        return None
    for context in contexts:
        context["a"] = [round(100 * value / largest) or (1 if value > 0 else 0) for value in context["a"]]
    return _round(largest, 4)


def row_labels(data: ReportData, layers: list) -> list[str]:
    """Heatmap row names: a router shared by several layers is one row named by all of them ("0-3")."""
    from ..models.shared_routers import layer_span

    return [layer_span(data.shared_layers[int(layer)]) if int(layer) in data.shared_layers else str(layer)
            for layer in layers]


def shared_caption(data: ReportData) -> str:
    """'; layers 0-3 share one router: one row per router' when they do, else ''."""
    from ..models.shared_routers import describe

    groups = [data.shared_layers[layer] for layer in sorted(data.shared_layers)]
    return f"; {describe(groups)}: one row per router" if groups else ""


def overview_figures(data: ReportData) -> list[tuple[str, str]]:
    """(caption, svg) of each overview bar chart the inputs allow; the layer × expert maps are drawn by the
    page from the inline data (:mod:`moetools.report.maps`)."""
    from .plots import grouped_bars_svg

    figures = []
    figures.extend(_concentration_figures(data, grouped_bars_svg))
    return figures


def _concentration_figures(data: ReportData, grouped_bars_svg) -> list[tuple[str, str]]:
    from ..score.specialisation import top_expert_share

    figures = []
    if data.routing is not None and data.routing.shape is not None and len(data.routing.domains) > 1:
        k = int(data.top_k or 1)
        share = top_expert_share(data.routing, k)
        names = list(share["domains"])
        series = [("own domain", [share["domains"][d]["share"] for d in names]),
                  ("same experts, other domains", [share["domains"][d]["elsewhere"] for d in names])]
        caption = (f"routing concentration: share of each domain's router mass on its top-{k} experts per layer, "
                   "beside the share the same experts take of the other domains")
        if data.baseline_routing is not None and data.baseline_routing.shape is not None:
            base = top_expert_share(data.baseline_routing, k)["domains"]
            series += [("baseline: own", [(base.get(d) or {}).get("share", np.nan) for d in names]),
                       ("baseline: other domains", [(base.get(d) or {}).get("elsewhere", np.nan) for d in names])]
            caption += f"; baseline: {html.escape(str((data.baseline_model or {}).get('name')))} (e.g. random init)"
        figures.append((caption, grouped_bars_svg("routing concentration", names, series, ylabel="share",
                                                  reference=share["uniform"], reference_label="uniform router")))
    skew = (data.scores_summary or {}).get("skew") or {}
    if skew.get("specialised"):
        per_layer = skew["specialised"]
        names = row_labels(data, [int(layer) for layer in per_layer])
        series = [(f"≥ {skew.get('min_ratio', 2)}x runner-up", [per_layer[n] for n in per_layer])]
        expected = skew.get("expected_under_null") or {}
        if expected:
            series.append(("expected with shuffled domain labels", [expected.get(n, np.nan) for n in per_layer]))
        significant = skew.get("significant") or {}
        if significant:
            series.append(("significant (q < 0.05)", [significant.get(n, np.nan) for n in per_layer]))
        figures.append(("domain-skewed experts per layer (MONET's criterion) beside the shuffled-label baseline"
                        + shared_caption(data),
                        grouped_bars_svg("skewed experts", names, series, ylabel="experts")))
    jsd = (data.scores_summary or {}).get("jsd") or {}
    for kind in ("jsd_routing", "jsd_functional"):
        observed, random = jsd.get(kind) or {}, jsd.get(f"{kind}_random") or {}
        if observed:
            names = [str(layer) for layer in observed]
            figures.append((f"{kind}: mean JSD per layer (bits) beside the random-expert baseline",
                            grouped_bars_svg(kind, names, [("experts", list(observed.values())),
                                                           ("random expert", [random.get(n, np.nan) for n in observed])],
                                             ylabel="bits")))
    return figures


__all__ = ["flat_scores", "overview_figures", "payload", "scorer_name", "verdict_rows"]
