"""From the sampler's heaps to ``expert`` records and the run summary (formats/samples.md)."""

from __future__ import annotations

from collections import Counter

from .contexts import context_record
from .options import domain_key

#: logit-lens tokens kept per expert (moe-explain shows the top 3, paper 002)
LOGIT_LENS_KEEP = 10


def _examples(items) -> list:
    return [item[-1][0] for item in items]


def _unique(items) -> list:
    """Items with distinct context ids (the same record twice in the input, e.g. overlapping shards)."""
    seen, kept = set(), []
    for item in items:
        identifier = item[-1][0].id
        if identifier not in seen:
            seen.add(identifier)
            kept.append(item)
    return kept


def _contexts(items) -> list[dict]:
    return [context_record(example) for example in _examples(items)]


def _allocate(banks: dict, row: int, expert: int, domains: Counter, wanted: int) -> list:
    """Negatives matched to a domain mix: quotas ∝ ``domains`` (largest remainder), shortfalls filled by key.

    Without a domain mix (no positives, or not matching by domain) it is the top
    ``wanted`` keys over all banks.
    """
    pools = {domain: _unique(bank.items(row, expert)) for domain, bank in banks.items()}
    merged = _unique(sorted((item for items in pools.values() for item in items), key=lambda item: item[:2],
                            reverse=True))
    total = sum(domains.values())
    if not total or len(pools) <= 1:
        return merged[:wanted]
    quotas = {domain: wanted * count // total for domain, count in domains.items()}
    rest = wanted - sum(quotas.values())
    by_remainder = sorted(domains, key=lambda d: (-(wanted * domains[d] % total), str(d)))
    for domain in by_remainder[:rest]:
        quotas[domain] += 1
    chosen, taken = [], set()
    for domain in sorted(quotas, key=str):
        for item in pools.get(domain, [])[:quotas[domain]]:
            chosen.append(item)
            taken.add(id(item))
    for item in merged:  # a domain without enough negatives: fill from the others, best keys first
        if len(chosen) >= wanted:
            break
        if id(item) not in taken:
            chosen.append(item)
    return sorted(chosen, key=lambda item: item[:2], reverse=True)


def _logit_lens(examples) -> list[dict]:
    counts: Counter = Counter()
    names: dict = {}
    for example in examples:
        for token_id, piece in example.lens or ():
            counts[token_id] += 1
            names[token_id] = piece
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:LOGIT_LENS_KEEP]
    return [{"id": token_id, "piece": names[token_id], "count": count} for token_id, count in ranked]


def _domains(contexts) -> Counter:
    return Counter(domain_key((context.get("meta") or {}).get("domain")) for context in contexts)


def expert_record(sampler, row: int, expert: int) -> dict:
    """The ``expert`` record of one (layer, expert)."""
    options = sampler.options
    wanted = options.wanted()
    firing = int(sampler.firing[row, expert])
    below = firing < options.min_count
    top_items = [] if below else _unique(sampler.top.items(row, expert))
    top = _contexts(top_items)
    top_ids = {context["id"] for context in top}
    weighted_items = [] if below else [item for item in _unique(sampler.weighted.items(row, expert))
                                       if item[-1][0].id not in top_ids][:options.weighted]
    weighted = _contexts(weighted_items)
    holdout_positive = [] if below else _contexts(_unique(sampler.holdout_positive.items(row, expert)))
    negative = [] if below else _contexts(_allocate(sampler.negative, row, expert, _domains(top + weighted),
                                                    options.negatives))
    holdout_negative = [] if below else _contexts(_allocate(sampler.holdout_negative, row, expert,
                                                            _domains(holdout_positive), options.holdout_negative))
    found = {"top": len(top), "weighted": len(weighted), "negative": len(negative),
             "holdout_positive": len(holdout_positive), "holdout_negative": len(holdout_negative)}
    short = any(found[name] < wanted[name] for name in wanted)
    record = {
        "type": "expert",
        "layer": int(sampler.row_layers[row]),
        "expert": int(expert),
        "status": "below-min-count" if below else ("short" if short else "ok"),
        "short": bool(short),
        "stats": {
            "firing_tokens": firing,
            "tokens_seen": int(sampler.tokens),
            "sequences": int(sampler.sequences),
            "max_activation": float(sampler.max_activation[row, expert]),
            "positive_contexts": {"explain": int(sampler.positive_cells[0, row, expert]),
                                  "holdout": int(sampler.positive_cells[1, row, expert])},
            "negative_contexts": {"explain": int(sampler.negative_cells[0, row, expert]),
                                  "holdout": int(sampler.negative_cells[1, row, expert])},
        },
        "wanted": wanted,
        "found": found,
        "explain": {"top": top, "weighted": weighted, "negative": negative},
        "holdout": {"positive": holdout_positive, "negative": holdout_negative},
    }
    lens = _logit_lens(_examples(top_items + weighted_items))
    if lens:
        record["logit_lens"] = lens
    return record


def assemble(sampler) -> tuple[list[dict], dict]:
    """All expert records in (layer, expert) order, and the run summary."""
    records = [expert_record(sampler, row, expert)
               for row in range(len(sampler.rows)) for expert in sampler.expert_ids]
    return records, summarize(sampler, records)


def summarize(sampler, records: list[dict]) -> dict:
    """What the end record and the stderr line report: how many experts were short, and by how much."""
    by_set = {}
    for name in sampler.options.wanted():
        missing = [r["wanted"][name] - r["found"][name] for r in records if r["found"][name] < r["wanted"][name]]
        by_set[name] = {"experts": len(missing), "missing": int(sum(missing))}
    return {
        "experts": len(records),
        "short_experts": sum(1 for r in records if r["short"]),
        "below_min_count": sum(1 for r in records if r["status"] == "below-min-count"),
        "never_fired": sum(1 for r in records if r["stats"]["firing_tokens"] == 0),
        "short_by_set": by_set,
        "sequences": int(sampler.sequences),
        "tokens": int(sampler.tokens),
        "skipped_by_domain": int(sampler.skipped_domain),
        "negatives_found": int(sum(r["found"]["negative"] + r["found"]["holdout_negative"] for r in records)),
    }


def summary_line(summary: dict) -> str:
    """One human line for stderr."""
    parts = [f"{summary['experts']} experts from {summary['sequences']} sequences ({summary['tokens']} tokens)"]
    if summary["short_experts"]:
        detail = ", ".join(f"{name} {entry['experts']} experts/{entry['missing']} missing"
                           for name, entry in summary["short_by_set"].items() if entry["experts"])
        parts.append(f"{summary['short_experts']} short ({detail})")
    else:
        parts.append("none short")
    if summary["below_min_count"]:
        parts.append(f"{summary['below_min_count']} below --min-count")
    if summary["skipped_by_domain"]:
        parts.append(f"{summary['skipped_by_domain']} sequences outside --domain skipped")
    return "; ".join(parts)


__all__ = ["assemble", "expert_record", "summarize", "summary_line"]
