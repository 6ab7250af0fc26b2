"""From a ``scores`` stream to an expert set: the selection criteria of the papers.

- ``top`` m per layer by any metric (000 A.5: 16 per layer by EDMRS; 003: top DAS experts);
- ``top_total`` m over all layers; ``bottom`` m per layer (003's "unrelated experts");
- ``threshold`` x: value ≥ x;
- ``cumulative`` p: ESFT's top-p per layer (deepseek-ai/ESFT ``generate_expert_config.py``):
  experts sorted by score, descending, are added while the running sum is below p
  (``if current >= top_p: break; select; current += score``), so the last one crosses p;
  only for a non-negative share: a signed metric (DAS, Pearson r, any negative value) is refused,
  its running sum need not ever reach p;
- ``min_ratio`` r with ``by="skew"``: MONET's domain skew (004 §5.1), the expert's best domain is
  ``domain`` and its probability there is ≥ r × the runner-up's; ``max_q`` adds the permutation
  test's Benjamini-Hochberg q-value (formats/scores.md);
- ``min_correlation`` c: Pearson r ≥ c (004 §5.2; MONET's thresholds 0.2 / 0.1 / 0.05);
- ``random`` m per layer, seeded (the control every paper compares against).

Filters (threshold, min_ratio, max_q, min_correlation) apply first, then at most one ranking
(top, top_total, bottom, cumulative); with no ranking every expert passing the filters is kept.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import FormatError, ModelMismatchError, UsageError
from .experts import ExpertSet

#: metrics that can be negative: no running sum of them is a share of anything (``--cumulative``)
SIGNED_METRICS = ("das", "pearson")


@dataclass
class Criterion:
    by: str | None = None
    domain: str | None = None
    top: int | None = None
    top_total: int | None = None
    bottom: int | None = None
    threshold: float | None = None
    cumulative: float | None = None
    min_ratio: float | None = None
    max_q: float | None = None
    min_correlation: float | None = None
    random: int | None = None
    seed: int = 0

    def check(self) -> None:
        rankings = [n for n in ("top", "top_total", "bottom", "cumulative") if getattr(self, n) is not None]
        if len(rankings) > 1:
            raise UsageError(f"give one of --top, --top-total, --bottom, --cumulative (got {', '.join(rankings)})")
        if self.random is not None and (rankings or self.by or self.threshold is not None):
            raise UsageError("--random picks experts by chance: it takes no --by, ranking or threshold")
        if self.min_correlation is not None and self.by is None:
            self.by = "pearson"
        if (self.min_ratio is not None or self.max_q is not None) and self.by is None:
            self.by = "skew"
        if self.random is None and self.by is None:
            raise UsageError("say what to select by: --by METRIC (e.g. das, af, esft_token, skew, pearson) "
                             "or --random M")
        if self.cumulative is not None and not 0 < self.cumulative <= 1:
            raise UsageError("--cumulative takes a share in (0, 1]")
        if self.cumulative is not None and self.by in SIGNED_METRICS:
            raise UsageError(_signed_cumulative(self.by, self.cumulative))
        if self.by == "skew" and self.domain is None:
            raise UsageError("--by skew needs --domain: the domain the experts are specialised in")
        if self.by == "skew" and self.min_ratio is None and self.max_q is None and not rankings:
            self.min_ratio = 2.0

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and not (k == "seed" and self.random is None)}


class ScoreTable:
    """The values of one metric for one domain, read from a scores stream in one pass."""

    def __init__(self, header: dict, criterion: Criterion):
        self.header = header
        self.criterion = criterion
        self.values: dict[tuple[int, int], float] = {}
        self.extra: dict[tuple[int, int], dict] = {}
        self.domains: set[str] = set(header.get("domains") or [])
        self.seen_metric = False
        self.layers = list(header.get("layers") or [])

    def _domain_value(self, record: dict, name: str):
        domains = record.get("domains") or {}
        self.domains.update(domains)
        if self.criterion.domain is None:
            return None, False
        values = domains.get(self.criterion.domain)
        if values is None or name not in values:
            return None, False
        return values[name], True

    def add(self, record: dict) -> None:
        if record.get("type") != "expert":
            return
        key = (int(record["layer"]), int(record["expert"]))
        if key[0] not in self.layers:
            self.layers.append(key[0])
        crit = self.criterion
        by = crit.by
        if by == "skew":
            skew = record.get("skew")
            if skew is None:
                return
            self.seen_metric = True
            if skew.get("domain") != crit.domain:
                return
            ratio = skew.get("ratio")
            ratio = math.inf if ratio is None and skew.get("specialised") else ratio
            if ratio is None:
                return
            self.values[key] = ratio
            self.extra[key] = skew
            return
        value, found = self._domain_value(record, by)
        if not found and by in record and not isinstance(record[by], dict):
            value, found = record[by], True
        if found:
            self.seen_metric = True
        if found and value is not None and math.isfinite(float(value)):
            self.values[key] = float(value)


def read_scores(readers, criterion: Criterion) -> tuple[ScoreTable, dict]:
    """One pass over every scores stream (same model) -> (table of the chosen metric, first header).
    A stream of one domain makes that domain the default of ``--domain``."""
    table, header = None, None
    for number, reader in enumerate(readers):
        for record in reader:
            if number and record is not None and table is not None and header is not reader.header:
                _same_model(header, reader.header)
            if table is None:
                header = reader.header
                domains = header.get("domains") or []
                if criterion.domain is None and criterion.by != "skew" and len(domains) == 1:
                    criterion.domain = domains[0]
                table = ScoreTable(header, criterion)
            table.add(record)
        if table is None:
            header = reader.header
            table = ScoreTable(header, criterion)
    if table is None:
        raise FormatError("no scores stream given")
    crit = criterion
    if crit.random is None and crit.domain is not None and table.domains and crit.domain not in table.domains:
        raise UsageError(f"domain {crit.domain!r} is not in the scores (domains: {', '.join(sorted(table.domains))})")
    if crit.random is None and not table.seen_metric:
        metrics = sorted((header.get("metrics") or {}).keys())
        hint = f" (this stream has: {', '.join(metrics)})" if metrics else ""
        need_domain = "" if crit.domain is not None else "; per-domain metrics need --domain"
        raise UsageError(f"no expert record has metric {crit.by!r}"
                         f"{' for domain ' + repr(crit.domain) if crit.domain else ''}{hint}{need_domain}")
    return table, header


def _same_model(first: dict, other: dict) -> None:
    a, b = (first.get("model") or {}).get("fingerprint"), (other.get("model") or {}).get("fingerprint")
    if a != b:
        raise ModelMismatchError(f"scores of different models: {a} and {b}; refusing to mix them")


def select(table: ScoreTable, criterion: Criterion, num_experts: int | None) -> tuple[dict, dict]:
    """(experts per layer in selection order, value per selected (layer, expert))."""
    crit = criterion
    if crit.random is not None:
        if num_experts is None:
            raise UsageError("--random needs the model's expert count (the scores header has no num_experts)")
        rng = np.random.default_rng(crit.seed)
        chosen = {layer: sorted(int(i) for i in rng.choice(num_experts, size=min(crit.random, num_experts),
                                                             replace=False))
                  for layer in sorted(table.layers)}
        return chosen, {}
    values = dict(table.values)
    if crit.threshold is not None:
        values = {k: v for k, v in values.items() if v >= crit.threshold}
    if crit.min_correlation is not None:
        values = {k: v for k, v in values.items() if v >= crit.min_correlation}
    if crit.by == "skew":
        if crit.min_ratio is not None:
            values = {k: v for k, v in values.items() if v >= crit.min_ratio}
        if crit.max_q is not None:
            values = {k: v for k, v in values.items()
                      if table.extra[k].get("q") is not None and table.extra[k]["q"] <= crit.max_q}
    by_layer: dict[int, list[tuple[int, float]]] = {layer: [] for layer in sorted(table.layers)}
    for (layer, expert), value in values.items():
        by_layer.setdefault(layer, []).append((expert, value))
    for items in by_layer.values():
        items.sort(key=lambda item: (-item[1], item[0]))   # best first, ties by id
    chosen: dict[int, list[int]] = {}
    if crit.top_total is not None:
        ranked = sorted(((v, layer, e) for layer, items in by_layer.items() for e, v in items),
                        key=lambda t: (-t[0], t[1], t[2]))[:crit.top_total]
        chosen = {layer: [] for layer in by_layer}
        for _, layer, expert in ranked:
            chosen[layer].append(expert)
    else:
        for layer, items in by_layer.items():
            if crit.top is not None:
                items = items[:crit.top]
            elif crit.bottom is not None:
                items = sorted(items, key=lambda item: (item[1], item[0]))[:crit.bottom]
            elif crit.cumulative is not None:
                negative = next((item for item in items if item[1] < 0), None)
                if negative is not None:
                    raise UsageError(_signed_cumulative(crit.by, crit.cumulative, (layer, *negative)))
                items = esft_top_p(items, crit.cumulative)
            chosen[layer] = [expert for expert, _ in items]
    scores = {(layer, e): values[(layer, e)] for layer, ids in chosen.items() for e in ids}
    return chosen, scores


def _signed_cumulative(by: str, share: float, example: tuple | None = None) -> str:
    seen = f" (layer {example[0]}, expert {example[1]}: {example[2]:.4g})" if example else ""
    return (f"--cumulative {share:g} sums a non-negative share per layer (ESFT's top-p), but {by} is signed"
            f"{seen}: its running sum need not reach {share:g} and would keep every expert; use --top N "
            "or --threshold X")


def esft_top_p(items: list[tuple[int, float]], top_p: float) -> list[tuple[int, float]]:
    """ESFT's top-p (generate_expert_config.py): walk experts by descending score, stop as soon as
    the running sum has reached ``top_p`` (checked before adding each expert)."""
    selected, current = [], 0.0
    for expert, score in sorted(items, key=lambda item: (-item[1], item[0])):
        if current >= top_p:
            break
        selected.append((expert, score))
        current += score
    return selected


def build_set(chosen: dict, scores: dict, criterion: Criterion, header: dict, *, tool: dict | None = None,
              sources: list | None = None) -> ExpertSet:
    provenance = {"criterion": criterion.as_dict()}
    if tool is not None:
        provenance["tool"] = tool
    if sources is not None:
        provenance["sources"] = sources
    if scores:
        provenance["scores"] = {str(layer): {str(e): scores[(layer, e)] if math.isfinite(scores[(layer, e)])
                                             else None for e in ids}
                                for layer, ids in chosen.items() if ids}
    return ExpertSet(experts={layer: list(ids) for layer, ids in chosen.items()}, model=header.get("model"),
                     provenance=provenance)


__all__ = ["Criterion", "ScoreTable", "build_set", "esft_top_p", "read_scores", "select"]
