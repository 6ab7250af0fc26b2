"""moe-score's routing statistics: traces in, one ``expert`` record per (layer, expert) out.

One streaming pass over the trace(s) fills :class:`~moetools.score.routing.DomainSums` (memory
(D, L, E) float64 × 5, independent of the number of tokens) and, only when the skew permutation
test or a per-document Pearson correlation is asked for, a
:class:`~moetools.score.routing.DocumentTable` (documents × L × E float32, bounded by
``document_memory``). The records and the stream layout are specified in formats/scores.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError, ModelMismatchError, UsageError
from ..models.shared_routers import RouterFold
from . import health as H
from . import metrics as M
from .permutation import skew_permutation_test
from .routing import DocumentTable, DomainSums

#: every metric moe-score computes from traces; scope "domain": one value per domain in the
#: record's ``domains`` map; "expert": one value per record. Paper references as in formats/scores.md.
METRICS = {
    "af": ("domain", "000 eq. 6: share of domain tokens whose top-K includes the expert"),
    "prob": ("domain", "mean full router probability over the domain's tokens"),
    "das": ("domain", "003 eq. 1: mean router probability on the domain minus on the general data"),
    "score": ("domain", "003 Table 5 Score: mean gate over the domain's tokens (0 where not selected)"),
    "explen": ("domain", "003 Table 5 ExpLen: mean ||E(x)|| over routed domain tokens"),
    "psn": ("domain", "003 Table 5 EC/PSN: mean g*||E(x)|| over the domain's tokens (0 where not selected)"),
    "reap": ("domain", ("REAP saliency: mean g*||E(x)|| over routed domain tokens, g the gate the model "
                       "multiplies (REAP's renormalize_router_weights)")),
    "esft_token": ("domain", "ESFT token selection ratio, normalised over the layer's experts"),
    "esft_gate": ("domain", ("ESFT average gate score: gate sum over the domain's tokens / their number "
                            "(rows do not sum to 1)")),
    "routed": ("domain", "domain tokens routed to the expert (count)"),
    "skew": ("expert", "004 sec. 5.1: best domain's mean router probability / runner-up's, p and q by permutation"),
    "pearson": ("expert", "004 sec. 5.2: Pearson r across documents, mean router probability vs a numeric field"),
    "rc_shift": ("expert", "003 eq. 4: squared change of the mean router probability between two traces"),
    "jsd_routing": ("expert", "002: JSD (bits) of the unembedding-cluster distribution of routed tokens vs the layer's"),
    "jsd_routing_random": ("expert", "002: the same for a random expert with as many tokens (mean of draws)"),
    "jsd_functional": ("expert", ("002: JSD (bits) of the clusters of the expert's logit-lens tokens (final norm "
                                 "applied) vs the layer's")),
    "jsd_functional_random": ("expert", "002: the same for a random expert with as many logit-lens tokens"),
    "health": ("expert", ("routing health: share of the layer's routing slots and of its tokens, dead and "
                          "always-on flags (thresholds in the end record's summary.health)")),
}
ALWAYS = ("af", "prob", "score", "explen", "psn", "reap", "esft_token", "esft_gate", "routed")
#: options read only for some metrics: given with a --metrics that asks for none of them, they would do nothing
OPTION_METRICS = {"--model": ("jsd_routing", "jsd_routing_random", "jsd_functional", "jsd_functional_random"),
                  "--target-field": ("pearson",), "--rc-against": ("rc_shift",), "--general": ("das",)}


def check_options_serve_metrics(metrics, given) -> None:
    """UsageError for an option of ``given`` (names of :data:`OPTION_METRICS`) that none of ``metrics``
    (``--metrics``; None: every metric) uses: an option that does nothing is refused, not ignored."""
    if metrics is None:
        return
    for option in given:
        served = OPTION_METRICS[option]
        if not any(name in metrics for name in served):
            raise UsageError(f"{option} serves only {', '.join(served)}, and --metrics asks for none of them: "
                             f"drop {option} or add {served[0]} to --metrics")
GENERAL_TRACE = "(general)"


@dataclass
class ScoreOptions:
    domain_field: str = "domain"
    default_domain: str | None = None      # documents without the field count as this domain
    general: str = "rest"                  # "rest" | a domain name | "trace" (a --general trace)
    target_field: str | None = None
    permutations: int = 1000
    seed: int = 0
    min_ratio: float = 2.0
    cdas_k: tuple[int, ...] = (6,)
    metrics: tuple[str, ...] | None = None  # None: every metric the input supports
    document_memory: int = 1024 << 20       # bytes of per-document state at most
    model_dir: str | None = None            # JSD (002): read the unembedding from here
    clusters: int = 100                     # k of the spherical k-means
    jsd_draws: int = 10                     # random-expert baseline draws
    notes: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.metrics is not None:
            unknown = [m for m in self.metrics if m not in METRICS]
            if unknown:
                raise UsageError(f"unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}")
        if self.min_ratio <= 1:
            raise UsageError("--min-ratio must be above 1")
        if any(k < 1 for k in self.cdas_k):
            raise UsageError("--cdas-k takes positive integers")


def trace_shape(header: dict, where: str) -> tuple[list[int], int, int]:
    layers, experts, top_k = header.get("layers"), header.get("num_experts"), header.get("top_k")
    if not isinstance(layers, list) or not isinstance(experts, int) or not isinstance(top_k, int):
        raise FormatError(f"{where}: trace header lacks layers / num_experts / top_k (formats/trace.md)")
    return layers, experts, top_k


def _same_model(first: dict, other: dict, where: str, fingerprints: bool = True) -> None:
    if trace_shape(first, "trace")[:2] != trace_shape(other, where)[:2]:
        raise ModelMismatchError(f"{where}: layers or expert count differ from the first trace")
    if fingerprints:
        a = (first.get("model") or {}).get("fingerprint")
        b = (other.get("model") or {}).get("fingerprint")
        if a != b:
            raise ModelMismatchError(f"{where}: traced with another model ({b}) than the first trace ({a}); "
                                     "refusing to mix models")


def _sequences(reader):
    for record in reader:
        if record.get("type") == "sequence":
            yield record


class RoutingScorer:
    """Accumulate one or more traces, then :meth:`records` and :meth:`summary`."""

    def __init__(self, options: ScoreOptions):
        options.check()
        self.options = options
        self.header: dict | None = None
        self.sums: DomainSums | None = None
        self.general: DomainSums | None = None
        self.documents: DocumentTable | None = None
        self.rc_before: np.ndarray | None = None
        self.clusters = None                # ClusterCounts when --model is given (JSD, paper 002)
        self.inputs: list[dict] = []
        self.sequences = 0
        self.fold: RouterFold | None = None   # layers sharing one router: one row per router
        self.layers: list[int] = []           # the scored layers: one per router

    def _start(self, header: dict) -> None:
        layers, experts, top_k = trace_shape(header, "trace")
        self.header = header
        self.fold = RouterFold.from_header(header)
        if self.fold is not None:
            layers = self.fold.layers
        self.layers = list(layers)
        self.sums = DomainSums(layers, experts, top_k, self.options.domain_field)
        want = self.options.metrics
        needs_docs = (self.options.target_field is not None
                      or (self.options.permutations > 0 and (want is None or "skew" in want)))
        if needs_docs:
            self.documents = DocumentTable(len(layers), experts, self.options.document_memory,
                                           self.options.target_field)
        self._start_clusters(header, len(layers), experts)

    def _start_clusters(self, header: dict, layers: int, experts: int) -> None:
        want = self.options.metrics or ()
        asked = [m for m in want if m.startswith("jsd_")]
        if self.options.model_dir is None:
            if asked:
                raise UsageError(f"cannot compute {asked[0]}: needs the model's unembedding: give --model DIR")
            return
        functional = bool(header.get("logit_lens"))
        if not functional and any(m.startswith("jsd_functional") for m in asked):
            raise UsageError("cannot compute jsd_functional: the trace has no logit-lens tokens; trace with "
                             "moe-trace --logit-lens J")
        if not functional:
            self.options.notes.append("jsd_functional not computed: the trace has no logit-lens tokens "
                                      "(moe-trace --logit-lens J)")
        from .jsd import ClusterCounts, check_model_of_trace, load_unembedding, spherical_kmeans

        check_model_of_trace(self.options.model_dir, header)
        labels = spherical_kmeans(load_unembedding(self.options.model_dir), self.options.clusters,
                                  seed=self.options.seed)
        self.clusters = ClusterCounts(labels, layers, experts, functional=functional,
                                      max_bytes=self.options.document_memory)

    def add_trace(self, reader, name: str = "-", on_record=None) -> None:
        """Add every sequence of a trace (a StreamReader of kind trace)."""
        records = _sequences(reader)
        first = next(records, None)
        header = reader.header
        if self.header is None:
            self._start(header)
        else:
            _same_model(self.header, header, name)
        self.inputs.append({"path": name, "tool": header.get("tool"), "model": header.get("model")})
        default = self.options.default_domain
        for record in ([first] if first is not None else []):
            self._add(record, default, on_record)
        for record in records:
            self._add(record, default, on_record)

    def _folded(self, record: dict) -> dict:
        return record if self.fold is None else self.fold.record(record)

    def _add(self, record, default, on_record) -> None:
        sums = self.sums
        original, record = record, self._folded(record)
        if self.clusters is not None:
            self.clusters.add(record, sums.num_experts)
        domain = sums.domain_of(record)
        if domain is None and default is not None:
            domain = default
        if domain is None:
            sums.add(record, None)
            if self.documents is not None and self.options.target_field is not None:
                # Pearson needs no domain: keep the document (the permutation test skips it)
                self.documents.add(str(record.get("doc_id")), None, int(record["experts"].shape[1]),
                                   record["prob_sum"], record.get("meta") or {})
        else:
            count, prob_sum = sums.add(record, domain)
            if self.documents is not None:
                self.documents.add(str(record.get("doc_id")), domain, count, prob_sum, record.get("meta") or {})
        self.sequences += 1
        if on_record is not None:
            on_record(original)

    def add_general_trace(self, reader, name: str) -> None:
        """All tokens of this trace are the general data D_g of DAS (003 eq. 1)."""
        if self.header is None:
            raise UsageError("give the domain trace(s) before the general trace")
        _same_model(self.header, reader.header, name)
        _, experts, top_k = trace_shape(self.header, name)
        if self.general is None:
            self.general = DomainSums(self.layers, experts, top_k)
        for record in _sequences(reader):
            self.general.add(self._folded(record), GENERAL_TRACE)
        self.inputs.append({"path": name, "role": "general", "tool": reader.header.get("tool"),
                            "model": reader.header.get("model")})

    def add_rc_trace(self, reader, name: str) -> None:
        """The other checkpoint's trace of the same corpus (RC, 003 eq. 4-5): its mean router
        probability per (layer, expert) over all its tokens with a domain (or every domain's)."""
        if self.header is None:
            raise UsageError("give the domain trace(s) before the --rc-against trace")
        _same_model(self.header, reader.header, name, fingerprints=False)
        _, experts, top_k = trace_shape(self.header, name)
        other = DomainSums(self.layers, experts, top_k, self.options.domain_field)
        default = self.options.default_domain
        for record in _sequences(reader):
            domain = other.domain_of(record) or default
            if domain is not None:                 # the same tokens as the scored side: those with a domain
                other.add(self._folded(record), "all")
        self.rc_before = M.mean_routing_score(other.array("prob")[0], other.token_counts()[0]) \
            if other.domains else None
        self.inputs.append({"path": name, "role": "rc", "tool": reader.header.get("tool"),
                            "model": reader.header.get("model")})

    # -- results ---------------------------------------------------------------------------------
    def _require(self, metric: str, ok: bool, why: str, quiet: bool = False) -> bool:
        """True when ``metric`` is to be computed; a metric asked for by name that the input cannot
        give is a usage error naming ``why``; otherwise it is skipped with a note (none if ``quiet``:
        metrics that need an option the user did not give)."""
        want = self.options.metrics
        if ok:
            return want is None or metric in want
        if want is not None and metric in want:
            raise UsageError(f"cannot compute {metric}: {why}")
        if not quiet:
            self.options.notes.append(f"{metric} not computed: {why}")
        return False

    def compute(self) -> dict:
        """Every metric as arrays; keys as in :data:`METRICS` (+ general-side arrays)."""
        if self.header is None or self.sums is None:
            raise FormatError("no trace records: nothing to score")
        sums, opts = self.sums, self.options
        if not sums.domains:
            message = (f"no document has meta.{opts.domain_field}: name the field with --domain-field, "
                       "or give --default-domain NAME to score every document as one domain")
            if opts.target_field is None:
                raise UsageError(message)
            opts.notes.append(f"per-domain metrics not computed: {message}")
        tokens = sums.token_counts()                                # (D,)
        arrays = {name: sums.array(name) for name in DomainSums.FIELDS}  # (D, L, E)
        t = tokens[:, None, None]
        out = {"domains": list(sums.domains), "tokens": tokens}
        out["af"] = M.activation_frequency(arrays["selected"], t)
        out["prob"] = M.mean_routing_score(arrays["prob"], t)
        out["score"] = M.direct_routing_score(arrays["gate"], t)
        out["explen"] = M.expert_output_norm(arrays["norm"], arrays["selected"])
        out["psn"] = M.score_times_norm(arrays["contribution"], t)
        out["reap"] = M.reap_saliency(arrays["contribution"], arrays["selected"])
        out["esft_token"] = M.esft_token_score(arrays["selected"])
        out["esft_gate"] = M.esft_gate_score(arrays["gate"], t)
        out["routed"] = arrays["selected"]
        if self._require("health", bool(sums.domains), "no tokens with a domain", quiet=True):
            out["health"], out["health_summary"] = H.summary(arrays["selected"].sum(axis=0), float(tokens.sum()),
                                                             sums.top_k, self.layers)
        self._general(out, arrays, tokens)
        self._skew(out)
        self._pearson(out)
        if self._require("rc_shift", self.rc_before is not None,
                         "needs the other checkpoint's trace of the same corpus (--rc-against TRACE)", quiet=True):
            pooled = M.mean_routing_score(arrays["prob"].sum(axis=0), tokens.sum())
            out["rc_shift"], out["rc"] = M.routing_consistency(self.rc_before, pooled)
        if self.clusters is not None:
            for kind in ("routing", "functional"):
                if kind == "functional" and self.clusters.functional is None:
                    continue
                observed, baseline = self.clusters.jsd(kind, draws=opts.jsd_draws, seed=opts.seed)
                out[f"jsd_{kind}"], out[f"jsd_{kind}_random"] = observed, baseline
        return out

    def _general(self, out, arrays, tokens) -> None:
        opts, domains = self.options, out["domains"]
        if opts.general == "trace":
            ok, why = self.general is not None and bool(self.general.domains), "the general trace has no tokens"
        elif opts.general == "rest":
            ok, why = len(domains) >= 2, (f"only one domain ({', '.join(domains) or 'none'}) in the trace: DAS "
                                          "needs general data; give --general TRACE or trace a corpus with "
                                          "several domains")
        else:
            ok, why = opts.general in domains, (f"general domain {opts.general!r} is not in the trace "
                                                f"(domains: {', '.join(domains)})")
        if not self._require("das", ok, why):
            return
        if opts.general == "trace":
            g_prob, g_tokens = self.general.array("prob")[0], self.general.token_counts()[0]
            out["das"] = M.domain_advantage(arrays["prob"], tokens[:, None, None], g_prob, g_tokens)
            out["general"] = {"tokens": g_tokens, "prob": M.mean_routing_score(g_prob, g_tokens),
                              "af": M.activation_frequency(self.general.array("selected")[0], g_tokens)}
        elif opts.general == "rest":
            total_prob, total_tokens = arrays["prob"].sum(axis=0), tokens.sum()
            rest_prob = total_prob[None] - arrays["prob"]
            rest_tokens = (total_tokens - tokens)[:, None, None]
            out["das"] = M.domain_advantage(arrays["prob"], tokens[:, None, None], rest_prob, rest_tokens)
        else:
            g = domains.index(opts.general)
            out["das"] = M.domain_advantage(arrays["prob"], tokens[:, None, None], arrays["prob"][g], tokens[g])
        out["cdas"] = {domain: {k: M.cumulative_das(out["das"][d], k) for k in opts.cdas_k}
                       for d, domain in enumerate(domains)}

    def _skew(self, out) -> None:
        domains = out["domains"]
        if not self._require("skew", len(domains) >= 2,
                             f"needs documents of at least two domains (meta.{self.options.domain_field}); "
                             f"the trace has only {', '.join(domains)}: trace a corpus with several domains"):
            return
        best, ratio = M.skew(out["prob"])
        out["skew_domain"], out["skew_ratio"] = best, ratio
        if self.options.permutations > 0 and self.documents is not None and len(self.documents):
            table = self.documents
            index = {d: i for i, d in enumerate(domains)}
            keep = np.asarray([d is not None for d in table.domains])
            labels = np.asarray([index[d] for d in table.domains if d is not None])
            out["skew_test"] = skew_permutation_test(table.mass()[keep],
                                                     np.asarray(table.tokens, dtype=np.float64)[keep], labels,
                                                     permutations=self.options.permutations,
                                                     seed=self.options.seed, min_ratio=self.options.min_ratio)

    def _pearson(self, out) -> None:
        field_name, table = self.options.target_field, self.documents
        if field_name is None:
            self._require("pearson", False, "needs a numeric per-document field: give --target-field NAME "
                                            "(e.g. toxicity) and trace a corpus whose documents carry it", quiet=True)
            return
        keep = np.isfinite(np.asarray(table.targets)) if table is not None and len(table) else np.zeros(0, bool)
        y = np.asarray(table.targets)[keep] if keep.size else np.zeros(0)
        ok = keep.sum() >= 3 and np.ptp(y) > 0
        why = (f"no numeric meta.{field_name} on at least 3 documents with differing values "
               f"({int(keep.sum())} documents have a number)")
        if not self._require("pearson", ok, why):
            return
        mass = table.mass()[keep]
        doc_tokens = np.asarray(table.tokens, dtype=np.float64)[keep]
        x = mass / doc_tokens[:, None, None]                       # mean router probability per document
        out["pearson"] = M.pearson(x, y)
        out["pearson_n"] = int(keep.sum())


__all__ = ["ALWAYS", "GENERAL_TRACE", "METRICS", "OPTION_METRICS", "RoutingScorer", "ScoreOptions",
           "check_options_serve_metrics", "trace_shape"]
