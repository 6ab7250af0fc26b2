"""Judged detection scores of labels: EMS, EDMS(d), precision/recall/F1, balanced accuracy, LDS.

For every label (formats/labels.md) of expert i, the scorer (an LLM with paper 000's A.2 prompt,
:mod:`moetools.score.judge.llm`, or the offline embedding scorer, :mod:`moetools.score.judge.embedding`)
predicts which held-out samples activate the expert (formats/samples.md ``holdout``: the first
``positives`` of ``holdout.positive``, true 1, and the first ``negatives`` of
``holdout.negative``, true 0; 10 + 10 as in paper 002). A P_domain(d) label is judged on the
holdout samples of domain d only (document meta ``domain_field``), giving EDMS_i^(d) (000 eq. 4);
a P_mono label (or a self/offline one) on all of them, giving EMS_i (000 eq. 3). Metrics:
:mod:`moetools.score.judge.metrics`; LDS_l (000 eq. 5) in one ``layer`` record per layer.

Position bias: each request shows the samples in a seeded random order, the seed derived from
(``seed``, layer, expert, prompt key, repeat); ``repeats`` R asks R orders and averages.

Verdicts: ``judged.<prompt>.verdicts`` lists every judged sample with its place in the samples
stream's holdout (``holdout.positive[i]`` / ``holdout.negative[i]``), its truth y and ŷ of each
repeat, so that a reader (moe-report) shows which held-out contexts the scorer got right.

Baseline (so that a score means something): every expert is also scored with the label of
another expert of the same layer (drawn with a seeded RNG, same samples and orders); its
metrics are written beside the real ones with the suffix ``_shuffled``, and the header gives the
chance levels of the design (:func:`moetools.score.judge.metrics.chance_levels`).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import asdict, dataclass

from .inputs import MONO, ExpertSamples, LabelSet
from .metrics import chance_levels, detection_metrics, layer_mean, mean_metrics

#: metric name in the scores stream -> definition (formats/scores.md); scope: expert
EXPERT_METRICS = {
    "ems": "000 eq. 3: share of held-out samples whose predicted activation equals the true one (P_mono label)",
    "precision": "TP/(TP+FP) of the predicted activations on held-out samples (P_mono label)",
    "recall": "TP/(TP+FN) (P_mono label)",
    "f1": "002: 2TP/(2TP+FP+FN) (P_mono label)",
    "balanced_accuracy": "(TP/(TP+FN) + TN/(TN+FP))/2, delphi's accuracy (P_mono label)",
}
#: per domain d (P_domain(d) labels, samples of domain d)
DOMAIN_METRICS = {
    "edms": "000 eq. 4: EMS of the P_domain(d) label on held-out samples of domain d",
    "edms_precision": "precision of the P_domain(d) label on domain d",
    "edms_recall": "recall of the P_domain(d) label on domain d",
    "edms_f1": "002 F1 of the P_domain(d) label on domain d",
    "edms_balanced_accuracy": "balanced accuracy of the P_domain(d) label on domain d",
}
FIELD_OF = {"accuracy": "ems", "precision": "precision", "recall": "recall", "f1": "f1",
            "balanced_accuracy": "balanced_accuracy"}
DOMAIN_FIELD_OF = {"accuracy": "edms", "precision": "edms_precision", "recall": "edms_recall", "f1": "edms_f1",
                   "balanced_accuracy": "edms_balanced_accuracy"}


@dataclass
class JudgeOptions:
    positives: int = 10          # holdout positives per expert (paper 002: 10)
    negatives: int = 10          # holdout negatives per expert (paper 002: 10)
    repeats: int = 1             # shuffles of the sample order per label, averaged
    seed: int = 0
    baseline: bool = True        # also score a label drawn from another expert of the layer
    domain_field: str = "domain"

    def as_dict(self) -> dict:
        return asdict(self)


def items_for(samples: ExpertSamples, key: str, options: JudgeOptions
              ) -> tuple[list[dict], list[bool], list[tuple[str, int]]]:
    """(contexts, true activations, places) judged for one expert: all holdout samples, or domain ``key``'s.

    ``places[k]`` = (``"positive"`` or ``"negative"``, index in that holdout list of the samples
    stream): where context k comes from, written with its verdict so that a reader finds the context.
    """
    def keep(context: dict) -> bool:
        return key == MONO or str(context["meta"].get(options.domain_field)) == key

    positives = [(i, c) for i, c in enumerate(samples.positives) if keep(c)][:options.positives]
    negatives = [(i, c) for i, c in enumerate(samples.negatives) if keep(c)][:options.negatives]
    contexts = [c for _, c in positives] + [c for _, c in negatives]
    places = [("positive", i) for i, _ in positives] + [("negative", i) for i, _ in negatives]
    return contexts, [True] * len(positives) + [False] * len(negatives), places


def order_for(options: JudgeOptions, layer: int, expert: int, key: str, repeat: int, n: int) -> list[int]:
    """The seeded order of one request (str seeds hash with SHA-512: the same across runs and machines)."""
    order = list(range(n))
    random.Random(f"{options.seed}:{layer}:{expert}:{key}:{repeat}").shuffle(order)
    return order


def verdict_list(contexts: list[dict], truth: list[bool], places: list[tuple[str, int]],
                 said: list[list[int | None]], similarity: list[float] | None) -> list[dict]:
    """One verdict per judged sample (formats/scores.md, ``judged.<prompt>.verdicts``), in the judged order
    (holdout positives, then negatives): its place in the samples stream's holdout, its context id, the
    truth y, ŷ of every repeat (null where that repeat's answer failed) and, for the embedding scorer,
    its cosine similarity to the label."""
    out = []
    for k, (side, index) in enumerate(places):
        verdict = {"holdout": side, "index": index, "id": contexts[k]["id"], "y": int(truth[k]),
                   "yhat": [run[k] for run in said]}
        if similarity is not None:
            verdict["sim"] = round(float(similarity[k]), 4)
        out.append(verdict)
    return out


def baseline_donors(label_set: LabelSet, seed: int) -> dict[tuple[int, int], tuple[int, int]]:
    """For each labelled expert, another labelled expert of the same layer whose label it is scored with."""
    by_layer: dict[int, list[int]] = {}
    for layer, expert in sorted(label_set.labels):
        by_layer.setdefault(layer, []).append(expert)
    donors = {}
    for layer, experts in by_layer.items():
        rng = random.Random(f"{seed}:shuffled-label:{label_set.key}:{layer}")
        for expert in experts:
            others = [e for e in experts if e != expert]
            if others:
                donors[(layer, expert)] = (layer, rng.choice(others))
    return donors


class Judge:
    """Scores every label set against the samples with one scorer (see the module docstring)."""

    def __init__(self, scorer, options: JudgeOptions):
        self.scorer = scorer
        self.options = options
        self.repeats = options.repeats if scorer.repeats_matter else 1
        self.skipped_no_samples: dict[str, int] = {}

    async def _score(self, explanation: str, samples: ExpertSamples, key: str, *, verdicts: bool = True) -> dict:
        contexts, truth, places = items_for(samples, key, self.options)
        out = {"positives": sum(truth), "negatives": len(truth) - sum(truth), "answered": 0, "requests": 0,
               "cache_hits": 0, "attempts": 0}
        if not contexts:
            out["error"] = "no held-out samples" + (f" of domain {key}" if key != MONO else "")
            return out
        fit = (samples.explain_positive, samples.explain_negative)
        runs, errors = [], []
        said: list[list[int | None]] = []        # (repeats, samples): ŷ per repeat in the judged order, None: failed
        similarity, threshold = None, None
        for repeat in range(self.repeats):
            order = order_for(self.options, samples.layer, samples.expert, key, repeat, len(contexts))
            prediction = await self.scorer.predict(explanation, [contexts[i] for i in order], fit)
            out["requests"] += prediction.requests
            out["cache_hits"] += prediction.cache_hits
            out["attempts"] += prediction.attempts
            if prediction.threshold is not None:
                threshold = prediction.threshold
            if prediction.scores is not None:
                similarity = [0.0] * len(contexts)
                for position, index in enumerate(order):
                    similarity[index] = prediction.scores[position]
            if prediction.chosen is None:
                errors.append(prediction.error)
                said.append([None] * len(contexts))
                if prediction.raw is not None:
                    out["raw"] = prediction.raw
                continue
            predicted = [False] * len(contexts)
            for position, index in enumerate(order):
                predicted[index] = prediction.chosen[position]
            said.append([int(p) for p in predicted])
            runs.append(detection_metrics(truth, predicted))
        out["answered"] = len(runs)
        if errors:
            out["error"] = errors[-1]
        if runs:
            out["metrics"] = mean_metrics(runs)
        if threshold is not None:
            out["threshold"] = round(float(threshold), 4)
        if verdicts:
            out["verdicts"] = verdict_list(contexts, truth, places, said, similarity)
        return out

    async def _expert(self, label_set: LabelSet, identity, samples: ExpertSamples, donors) -> tuple:
        label = label_set.labels[identity]
        tasks = [self._score(label["explanation"], samples, label_set.key)]
        donor = donors.get(identity)
        if self.options.baseline and donor is not None:
            tasks.append(self._score(label_set.labels[donor]["explanation"], samples, label_set.key,
                                     verdicts=False))
        results = await asyncio.gather(*tasks)
        return label_set.key, identity, results[0], (results[1] if len(results) > 1 else None), donor

    async def run(self, label_sets: dict[str, LabelSet], samples: dict) -> tuple[list[dict], list[dict], dict]:
        """(expert records, layer records, summary)."""
        jobs = []
        for key, label_set in label_sets.items():
            donors = baseline_donors(label_set, self.options.seed)
            missing = [identity for identity in label_set.labels if identity not in samples]
            self.skipped_no_samples[key] = len(missing)
            for identity in sorted(label_set.labels):
                if identity in samples:
                    jobs.append(self._expert(label_set, identity, samples[identity], donors))
        await self.scorer.start()
        tasks = [asyncio.ensure_future(job) for job in jobs]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            # a fatal backend error (refused key, ...) stops the run: no request may outlive the client
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            await self.scorer.aclose()
        return self._records(results, label_sets)

    def _records(self, results, label_sets) -> tuple[list[dict], list[dict], dict]:
        records: dict[tuple[int, int], dict] = {}
        per_layer: dict[int, dict[str, list]] = {}
        totals: dict[str, dict[str, list]] = {}
        for key, identity, scored, shuffled, donor in results:
            record = records.setdefault(identity, {"type": "expert", "layer": identity[0], "expert": identity[1]})
            names = FIELD_OF if key == MONO else DOMAIN_FIELD_OF
            target = record if key == MONO else record.setdefault("domains", {}).setdefault(key, {})
            metrics = scored.get("metrics")
            base = shuffled.get("metrics") if shuffled else None
            for name, field in names.items():
                target[field] = metrics[name] if metrics else None
                if self.options.baseline:
                    target[field + "_shuffled"] = base[name] if base else None
            provenance = {k: v for k, v in scored.items() if k != "metrics"}
            provenance["status"] = "ok" if metrics else "failed"
            provenance["scorer"] = self.scorer.kind
            provenance["repeats"] = self.repeats
            explainer = label_sets[key].explainer or {}
            provenance["explainer"] = {"backend": explainer.get("backend"), "model": explainer.get("model")}
            if donor is not None and self.options.baseline:
                provenance["shuffled_from"] = donor[1]
            if "verdicts" in provenance:     # the long list last: a record stays readable with jq or less
                provenance["verdicts"] = provenance.pop("verdicts")
            record.setdefault("judged", {})[key] = provenance
            bucket = totals.setdefault(key, {"real": [], "shuffled": [], "failed": 0})
            bucket["failed"] += int(metrics is None)
            if metrics:
                bucket["real"].append(metrics)
            if base:
                bucket["shuffled"].append(base)
            if key == MONO:
                layer = per_layer.setdefault(identity[0], {"ems": [], "shuffled": []})
                layer["ems"].append(metrics["accuracy"] if metrics else None)
                layer["shuffled"].append(base["accuracy"] if base else None)
        layer_records = [{"type": "layer", "layer": layer, "lds": layer_mean(v["ems"]),
                          "lds_shuffled": layer_mean(v["shuffled"]) if self.options.baseline else None,
                          "experts": sum(x is not None for x in v["ems"])}
                         for layer, v in sorted(per_layer.items())]
        summary = {"labels": {}, "accounting": self.scorer.accounting.as_dict()}
        for key, label_set in label_sets.items():
            bucket = totals.get(key, {"real": [], "shuffled": [], "failed": 0})
            summary["labels"][key] = {
                "path": label_set.path, "judged": len(bucket["real"]), "failed": bucket["failed"],
                "labels_failed": label_set.failed, "labels_without_samples": self.skipped_no_samples.get(key, 0),
                "mean": mean_metrics(bucket["real"]), "mean_shuffled": mean_metrics(bucket["shuffled"])}
        return [records[k] for k in sorted(records)], layer_records, summary


def header_extra(scorer, options: JudgeOptions, label_sets: dict[str, LabelSet], samples_header: dict,
                 samples_path: str, repeats: int) -> dict:
    metrics = {}
    keys = set(label_sets)
    if MONO in keys:
        metrics.update({name: {"scope": "expert", "definition": text} for name, text in EXPERT_METRICS.items()})
        metrics["lds"] = {"scope": "layer", "definition": "000 eq. 5: mean EMS over the layer's experts"}
    if keys - {MONO}:
        metrics.update({name: {"scope": "domain", "definition": text} for name, text in DOMAIN_METRICS.items()})
    if options.baseline:
        for name, spec in list(metrics.items()):
            metrics[name + "_shuffled"] = {"scope": spec["scope"], "definition": f"{name} of a label drawn from "
                                           "another expert of the same layer (baseline)"}
    return {
        "source": f"judged-{scorer.kind}",
        "scorer": scorer.describe(),
        "layers": list(samples_header.get("layers") or []),
        "num_experts": samples_header.get("num_experts"),
        "top_k": samples_header.get("top_k"),
        "domain_field": options.domain_field,
        "domains": sorted(keys - {MONO}),
        "metrics": metrics,
        "options": {**options.as_dict(), "repeats": repeats},
        "chance": chance_levels(options.positives, options.negatives),
        "inputs": [{"path": samples_path, "role": "samples", "tool": samples_header.get("tool")}] +
                  [{"path": s.path, "role": "labels", "prompt": s.prompt, "explainer": s.explainer}
                   for s in label_sets.values()],
    }


__all__ = ["DOMAIN_METRICS", "EXPERT_METRICS", "Judge", "JudgeOptions", "baseline_donors", "header_extra",
           "items_for", "order_for", "verdict_list"]
