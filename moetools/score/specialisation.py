"""Do the experts specialise by domain? Routing statistics from a ``trace`` stream.

Reads only what every trace has (formats/trace.md): per sequence record the
document's ``meta.domain``, its ``tokens`` (T,) and ``prob_sum`` (L, E), the
sum over its T tokens of the full router distribution. So it works for any
model moe-trace supports, MONET's composed experts included (E = N).

For domain d, layer l and expert e, the mean routing probability per token is

    p(d, l, e) = Σ_{sequences s of d} prob_sum_s[l, e] / Σ_{s of d} T_s.

Two figures per model:

- **top-expert share** (:func:`top_expert_share`): the share of domain d's
  routing mass at layer l held by its k most-used experts,
  share_k(d, l) = Σ_{e ∈ top_k(p(d, l, ·))} p(d, l, e) / Σ_e p(d, l, e);
  and, for the same experts, the share they hold of the *other* domains' mass
  (pooled over their tokens). Routing that is concentrated but not
  domain-specific (one busy expert for everything) raises the first and the
  second alike; specialisation shows as the gap between them. A uniform router
  gives k/E for both.
- **skewed experts** (:func:`skewed_experts`, paper 004 §5.1 and Appendix D.1):
  expert e at layer l is specialised in domain d when p(d, l, e) is at least
  ``ratio`` (2) times the next-highest domain's p(d', l, e); the count per layer
  and per domain. Experts below ``min_probability`` in every domain can be left
  out (the paper uses no floor: default 0).

Compare each figure with the same model architecture at random initialisation
(:func:`compare_reports`): routing depends on the tokens even in an untrained
model, so skew appears there too; only the excess over it is learned.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable

import numpy as np

from ..errors import FormatError


class DomainRouting:
    """Router probability mass per domain, accumulated one trace record at a time.

    Memory is (D, L, E) float64 whatever the corpus length.
    """

    def __init__(self, domain_field: str = "domain"):
        self.domain_field = domain_field
        self.domains: list[str] = []
        self._mass: list[np.ndarray] = []  # per domain (L, E) float64
        self._tokens: list[int] = []
        self.shape: tuple[int, int] | None = None
        self.sequences = 0
        self.skipped_without_domain = 0
        self.routed: np.ndarray | None = None  # (L, E) Σ_t 1[e ∈ topK_l(t)] over tokens with a domain

    def add(self, record: dict) -> None:
        """Add one ``sequence`` record (other record types are ignored)."""
        if record.get("type", "sequence") != "sequence":
            return
        domain = (record.get("meta") or {}).get(self.domain_field)
        if domain is None:
            self.skipped_without_domain += 1
            return
        if "prob_sum" not in record:
            raise FormatError("trace record without prob_sum: specialisation needs the full router distribution")
        prob_sum = np.asarray(record["prob_sum"], dtype=np.float64)  # (L, E)
        if prob_sum.ndim != 2:
            raise FormatError(f"prob_sum must be (layers, experts), got shape {prob_sum.shape}")
        if self.shape is None:
            self.shape = prob_sum.shape
        elif prob_sum.shape != self.shape:
            raise FormatError(f"prob_sum shape {prob_sum.shape} differs from the first record's {self.shape}")
        domain = str(domain)
        if domain not in self.domains:
            self.domains.append(domain)
            self._mass.append(np.zeros(self.shape, dtype=np.float64))
            self._tokens.append(0)
        index = self.domains.index(domain)
        self._mass[index] += prob_sum
        self._tokens[index] += int(np.asarray(record["tokens"]).shape[0])
        self.sequences += 1
        experts = record.get("experts")
        if experts is not None:   # the routing counts of moetools.score.health
            layers, count = self.shape
            ids = np.asarray(experts).astype(np.int64) + (np.arange(layers, dtype=np.int64) * count)[:, None, None]
            counts = np.bincount(ids.ravel(), minlength=layers * count)[:layers * count].reshape(layers, count)
            self.routed = counts.astype(np.float64) if self.routed is None else self.routed + counts

    def extend(self, records: Iterable[dict]) -> DomainRouting:
        for record in records:
            self.add(record)
        return self

    @property
    def tokens(self) -> dict[str, int]:
        return dict(zip(self.domains, self._tokens))

    def ordered(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Domains sorted by name, their mass (D, L, E) and token counts (D,)."""
        if not self.domains:
            raise FormatError("no trace records with a domain: is meta.domain set in the corpus?")
        order = sorted(range(len(self.domains)), key=lambda i: self.domains[i])
        mass = np.stack([self._mass[i] for i in order])  # (D, L, E)
        tokens = np.array([self._tokens[i] for i in order], dtype=np.float64)  # (D,)
        return [self.domains[i] for i in order], mass, tokens

    def mean_probability(self) -> tuple[list[str], np.ndarray]:
        """p(d, l, e): mean router probability per token, (D, L, E)."""
        domains, mass, tokens = self.ordered()
        return domains, mass / np.maximum(tokens, 1.0)[:, None, None]


def top_expert_share(routing: DomainRouting, k: int) -> dict:
    """share_k(d, l) and the share of the other domains' mass on the same experts (see module doc)."""
    domains, mass, _ = routing.ordered()
    _, layers, experts = mass.shape
    k = max(1, min(int(k), experts))
    total = mass.sum(axis=2)  # (D, L)
    top = np.argsort(-mass, axis=2, kind="stable")[:, :, :k]  # (D, L, k) the domain's busiest experts
    result = {"k": k, "uniform": k / experts, "domains": {}}
    for d, domain in enumerate(domains):
        own = np.take_along_axis(mass[d], top[d], axis=1).sum(axis=1) / np.maximum(total[d], 1e-30)  # (L,)
        others = np.delete(mass, d, axis=0).sum(axis=0)  # (L, E) pooled over the other domains' tokens
        other_total = others.sum(axis=1)
        elsewhere = np.take_along_axis(others, top[d], axis=1).sum(axis=1) / np.maximum(other_total, 1e-30)
        if len(domains) == 1:
            elsewhere = np.full(layers, np.nan)
        result["domains"][domain] = {
            "share_per_layer": own.round(6).tolist(), "share": float(own.mean()),
            "elsewhere_per_layer": elsewhere.round(6).tolist(), "elsewhere": float(np.mean(elsewhere)),
            "gap": float(np.mean(own - elsewhere)),
        }
    values = result["domains"].values()
    result["mean_share"] = float(np.mean([v["share"] for v in values]))
    result["mean_elsewhere"] = float(np.mean([v["elsewhere"] for v in values]))
    result["mean_gap"] = float(np.mean([v["gap"] for v in values]))
    return result


def skewed_experts(routing: DomainRouting, ratio: float = 2.0, min_probability: float = 0.0) -> dict:
    """Experts whose mean routing probability on one domain is >= ``ratio`` x the runner-up domain's.

    Paper 004 §5.1: "if the routing probability for a particular domain was at
    least twice as high as for the second most activated domain, we labeled that
    expert as specialized in that domain". Needs at least two domains.
    """
    domains, probability = routing.mean_probability()  # (D, L, E)
    count, layers, experts = probability.shape
    if count < 2:
        raise FormatError("the skew criterion needs at least two domains in the trace")
    ranked = np.sort(probability, axis=0)  # ascending over domains, (D, L, E)
    best, runner_up = ranked[-1], ranked[-2]  # (L, E)
    winner = np.argmax(probability, axis=0)  # (L, E)
    skewed = (best >= ratio * runner_up) & (best > 0) & (best >= min_probability)  # (L, E)
    by_domain = {domain: int(np.sum(skewed & (winner == d))) for d, domain in enumerate(domains)}
    by_domain_per_layer = {domain: np.sum(skewed & (winner == d), axis=1).tolist()
                           for d, domain in enumerate(domains)}
    return {"ratio": ratio, "min_probability": min_probability, "per_layer": skewed.sum(axis=1).tolist(),
            "total": int(skewed.sum()), "experts": layers * experts, "share": float(skewed.mean()),
            "by_domain": by_domain, "by_domain_per_layer": by_domain_per_layer}


def specialisation_report(routing: DomainRouting, *, k: int, ratio: float = 2.0,
                          min_probability: float = 0.0) -> dict:
    """Both figures, with the token counts they rest on."""
    domains, _, tokens = routing.ordered()
    layers, experts = routing.shape
    return {"layers": layers, "experts_per_layer": experts, "sequences": routing.sequences,
            "tokens": {domain: int(count) for domain, count in zip(domains, tokens)},
            "skipped_without_domain": routing.skipped_without_domain,
            "top_expert_share": top_expert_share(routing, k),
            "skewed_experts": skewed_experts(routing, ratio, min_probability)}


def compare_reports(trained: dict, untrained: dict) -> dict:
    """Trained against random-init: the headline numbers side by side, and their ratios."""
    def ratio(a: float, b: float) -> float | None:
        return None if b == 0 else a / b

    t_share, u_share = trained["top_expert_share"], untrained["top_expert_share"]
    t_skew, u_skew = trained["skewed_experts"], untrained["skewed_experts"]
    return {
        "top_share": {"trained": t_share["mean_share"], "random": u_share["mean_share"],
                      "ratio": ratio(t_share["mean_share"], u_share["mean_share"])},
        "top_share_gap": {"trained": t_share["mean_gap"], "random": u_share["mean_gap"],
                          "ratio": ratio(t_share["mean_gap"], u_share["mean_gap"])},
        "skewed_experts": {"trained": t_skew["total"], "random": u_skew["total"],
                           "ratio": ratio(t_skew["total"], u_skew["total"])},
        "more_specialised_than_random": bool(t_skew["total"] > u_skew["total"]
                                             and t_share["mean_gap"] > u_share["mean_gap"]),
    }


#: files of a model directory that hold weights (not copied into a random-init copy)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def random_init_copy(model_dir, out, seed: int = 0):
    """``out``: the same config, tokenizer and generation files as ``model_dir``, freshly initialised weights.

    The baseline of :func:`compare_reports`: routing of an untrained model of the same architecture.
    """
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from ..models.loader import load_config

    model_dir, out = Path(model_dir), Path(out)
    config = load_config(model_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    out.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()  # callers report on stderr themselves
    model.save_pretrained(out)
    for path in model_dir.iterdir():  # tokenizer and generation files, not weights or the config
        if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES) and not path.name.endswith(".index.json") \
                and not (out / path.name).exists():
            shutil.copy2(path, out / path.name)
    return out


def routing_from_stream(binary_file, domain_field: str = "domain") -> tuple[DomainRouting, dict]:
    """Accumulate a whole trace stream (any encoding moetools reads); returns it and the stream header.

    Layers that share one router (the header's ``model.shared_routers``, MONET's grouped routing) are
    one row, the router's: their routing is one sample, counted once
    (:mod:`moetools.models.shared_routers`)."""
    from ..models.shared_routers import RouterFold
    from ..streams import StreamReader

    reader = StreamReader(binary_file, kinds="trace")
    fold = RouterFold.from_header(reader.header)
    routing = DomainRouting(domain_field)
    for record in reader:
        sequence = fold is not None and record.get("type", "sequence") == "sequence"
        routing.add(fold.record(record) if sequence else record)
    return routing, reader.header
