"""The ``scores`` stream moe-score writes (formats/scores.md): header fields, records, end summary."""

from __future__ import annotations

import math

import numpy as np

from .scorer import METRICS, RoutingScorer

SCORES_SOURCE = "routing"


def _num(value):
    """A JSON-safe number: NaN and ±inf become null (jq cannot read NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _flag(value):
    """1.0 / 0.0 / NaN (not judged) as true / false / null."""
    return None if math.isnan(value) else bool(value)


def asked(metrics, name: str) -> bool:
    """Whether ``--metrics`` (None: every metric the input supports) asks for ``name``: only those are written."""
    return metrics is None or name in metrics


def header_extra(scorer: RoutingScorer, computed: dict) -> dict:
    opts, trace = scorer.options, scorer.header
    present = [name for name in METRICS if (name in computed or (name == "skew" and "skew_ratio" in computed))
               and asked(opts.metrics, name)]
    general = {"kind": opts.general}
    if opts.general not in ("rest", "trace"):
        general = {"kind": "domain", "domain": opts.general}
    extra = {
        "source": SCORES_SOURCE,
        "layers": list(scorer.layers),
        "num_experts": trace["num_experts"],
        "top_k": trace["top_k"],
        "domain_field": opts.domain_field,
        "domains": list(computed["domains"]),
        "general": general,
        "target_field": opts.target_field,
        "metrics": {name: {"scope": METRICS[name][0], "definition": METRICS[name][1]} for name in present},
        "options": {"permutations": opts.permutations, "seed": opts.seed, "min_ratio": opts.min_ratio,
                    "cdas_k": list(opts.cdas_k), "default_domain": opts.default_domain,
                    "clusters": opts.clusters if opts.model_dir else None, "jsd_draws": opts.jsd_draws},
        "inputs": scorer.inputs,
    }
    if scorer.fold is not None:   # one record per router: which layers each one routes
        extra["shared_routers"] = [members for members in scorer.fold.shared.values()]
    return extra


def expert_records(computed: dict, layers: list[int], min_ratio: float, metrics=None, shared: dict | None = None):
    """One ``expert`` record per (layer, expert), layers then experts ascending; with ``metrics``
    (``--metrics``) only those metrics; ``layers`` are the router layers and ``shared`` (router
    layer -> the layers it routes) adds ``shared_layers``."""
    shared = shared or {}
    domains = computed["domains"]
    per_domain = [name for name in ("af", "prob", "das", "score", "explen", "psn", "reap", "esft_token",
                                    "esft_gate") if name in computed and asked(metrics, name)]
    routed = asked(metrics, "routed")
    test = computed.get("skew_test")
    general = computed.get("general")
    n_experts = computed["af"].shape[-1]
    for li, layer in enumerate(layers):
        for expert in range(n_experts):
            record = {"type": "expert", "layer": int(layer), "expert": expert, "domains": {}}
            if int(layer) in shared:
                record["shared_layers"] = list(shared[int(layer)])
            for d, domain in enumerate(domains):
                values = {name: _num(computed[name][d, li, expert]) for name in per_domain}
                if routed:
                    values["routed"] = int(computed["routed"][d, li, expert])
                record["domains"][domain] = values
            if general is not None:
                record["general"] = {"prob": _num(general["prob"][li, expert]),
                                     "af": _num(general["af"][li, expert])}
            if "skew_ratio" in computed:
                ratio = float(computed["skew_ratio"][li, expert])
                top = float(computed["prob"][computed["skew_domain"][li, expert], li, expert])
                skew = {"domain": domains[int(computed["skew_domain"][li, expert])] if top > 0 else None,
                        "ratio": _num(ratio),
                        "specialised": bool(top > 0 and (ratio >= min_ratio or math.isinf(ratio)))}
                if test is not None:
                    skew["p"] = _num(test.p[li, expert])
                    skew["q"] = _num(test.q[li, expert])
                record["skew"] = skew
            if "pearson" in computed:
                record["pearson"] = _num(computed["pearson"][li, expert])
            if "health" in computed:
                health = computed["health"]
                record["health"] = {"share": _num(f"{health['share'][li, expert]:.6g}"),
                                    "tokens": _num(f"{health['tokens'][li, expert]:.6g}"),
                                    "dead": _flag(health["dead"][li, expert]),
                                    "always_on": _flag(health["always_on"][li, expert])}
            for name in ("rc_shift", "jsd_routing", "jsd_routing_random", "jsd_functional",
                         "jsd_functional_random"):
                if name in computed and asked(metrics, name):
                    record[name] = _num(computed[name][li, expert])
            yield record


def end_summary(scorer: RoutingScorer, computed: dict, q_threshold: float = 0.05) -> dict:
    sums, layers = scorer.sums, scorer.layers
    summary = {
        "sequences": scorer.sequences,
        "tokens": {d: int(t) for d, t in zip(computed["domains"], computed["tokens"])},
        "missing_domain": {"documents": sums.missing_domain_documents, "sequences": sums.missing_domain_sequences,
                           "tokens": int(sums.missing_domain_tokens)},
    }
    if scorer.documents is not None:
        summary["documents"] = len(scorer.documents)
        summary["document_state_bytes"] = scorer.documents.nbytes
    if "cdas" in computed:
        summary["cdas"] = {domain: {str(k): {"per_layer": {str(layer): _num(v) for layer, v in zip(layers, per)},
                                             "total": _num(total)}
                                    for k, (per, total) in by_k.items()}
                           for domain, by_k in computed["cdas"].items()}
    if "skew_ratio" in computed:
        ratio = np.nan_to_num(computed["skew_ratio"], nan=0.0, posinf=np.inf)
        top = np.take_along_axis(computed["prob"], computed["skew_domain"][None], axis=0)[0]
        passing = (ratio >= scorer.options.min_ratio) & (top > 0)
        skew = {"min_ratio": scorer.options.min_ratio,
                "specialised": {str(layer): int(passing[i].sum()) for i, layer in enumerate(layers)},
                "specialised_total": int(passing.sum())}
        test = computed.get("skew_test")
        if test is not None:
            significant = passing & (np.nan_to_num(test.q, nan=1.0) < q_threshold)
            skew.update({"permutations": test.permutations, "exact": test.exact, "seed": scorer.options.seed,
                         "expected_under_null": {str(layer): _num(test.expected_count[i])
                                                 for i, layer in enumerate(layers)},
                         "expected_under_null_total": _num(test.expected_count.sum()),
                         "q_threshold": q_threshold,
                         "significant": {str(layer): int(significant[i].sum()) for i, layer in enumerate(layers)},
                         "significant_total": int(significant.sum())})
        summary["skew"] = skew
    if "pearson" in computed:
        summary["pearson"] = {"field": scorer.options.target_field, "documents": computed["pearson_n"],
                              "without_value": scorer.documents.without_target}
    if "health_summary" in computed:
        summary["health"] = computed["health_summary"]
    if "rc" in computed:
        summary["rc"] = _num(computed["rc"])
    if scorer.clusters is not None:
        jsd = {"clusters": scorer.clusters.k, "draws": scorer.options.jsd_draws,
               "unknown_tokens": scorer.clusters.unknown_tokens}
        for name in ("jsd_routing", "jsd_routing_random", "jsd_functional", "jsd_functional_random"):
            if name in computed and asked(scorer.options.metrics, name):
                jsd[name] = {str(layer): _num(np.nanmean(computed[name][i])) if np.isfinite(computed[name][i]).any()
                             else None for i, layer in enumerate(layers)}
        summary["jsd"] = jsd
    if scorer.options.notes:
        summary["notes"] = list(scorer.options.notes)
    return summary


__all__ = ["SCORES_SOURCE", "asked", "end_summary", "expert_records", "header_extra"]
