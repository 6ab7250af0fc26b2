"""The ``probe`` stream (formats/probe.md): k-sparse probes of expert / dense FFN neurons (paper 002), and the
trigger/target attribution of labels (``moe-probe causal``: header ``causal``, records ``causal``/``causal_layer``)."""

from __future__ import annotations

from ..schema import (
    Schema,
    field_choice,
    field_int,
    field_list,
    field_map,
    field_number,
    field_str,
    is_int,
    need,
    register_schema,
    where,
)


def _concept_names(header: dict) -> set[str] | None:
    concepts = header.get("concepts")
    if not isinstance(concepts, list):
        return None
    return {concept.get("name") for concept in concepts if isinstance(concept, dict)}


@register_schema
class ProbeSchema(Schema):
    kind = "probe"
    record_types = ("probe", "best", "causal", "causal_layer")

    def check_header(self, header: dict) -> None:
        place = "probe header"
        if "causal" in header:
            causal = field_map(header, "causal", place)
            proposer = field_map(causal, "proposer", place + " causal")
            field_str(proposer, "backend", place + " causal.proposer")
            field_str(causal, "formula", place + " causal")
            for name in ("triggers", "targets", "attempts", "baseline_shuffles"):
                field_int(causal, name, place + " causal", minimum=1)
            need(proposer.get("backend") == "offline" or isinstance(causal.get("prompt"), dict), place,
                 "'causal.prompt' (the prompt templates) is required unless the proposer is offline")
            return
        field_choice(header, "arch", place, ("moe", "dense"))
        concepts = field_list(header, "concepts", place)
        for concept in concepts:
            need(isinstance(concept, dict) and isinstance(concept.get("name"), str)
                 and isinstance(concept.get("description"), str), place,
                 "each of 'concepts' must be a map with string 'name' and 'description'")
        ks = field_list(header, "ks", place)
        need(bool(ks) and all(is_int(k) and k >= 1 for k in ks), place, "'ks' must be a non-empty list of integers >= 1")
        field_int(header, "min_count", place, minimum=1)
        split = field_map(header, "split", place)
        fraction = field_number(split, "test_fraction", place + " split")
        need(0 < fraction < 1, place, f"'split.test_fraction' must be in (0, 1), got {fraction!r}")
        field_choice(split, "by", place + " split", ("document",))
        field_int(header, "reservoir", place, minimum=1, optional=True)
        field_map(header, "regression", place, optional=True)

    def _common(self, record, header, place):
        concept = field_str(record, "concept", place)
        names = _concept_names(header)
        need(names is None or concept in names, place, f"'concept' {concept!r} is not among the header's concepts")
        field_int(record, "layer", place)
        dense = header.get("arch") == "dense"
        expert = field_int(record, "expert", place, nullable=True)
        need((expert is None) == dense, place, "'expert' is null exactly when the header's arch is 'dense'")
        k = field_int(record, "k", place, minimum=1)
        ks = header.get("ks")
        need(not isinstance(ks, list) or k in ks, place, f"'k' {k} is not among the header's ks")
        for name in ("train_f1", "test_f1"):
            value = field_number(record, name, place)
            need(0 <= value <= 1, place, f"'{name}' must be in [0, 1], got {value!r}")
        return k

    def check_probe(self, record, header, number=None):
        place = where("probe", number, "probe")
        k = self._common(record, header, place)
        neurons = field_list(record, "neurons", place)
        need(len(neurons) == k and all(is_int(n) and n >= 0 for n in neurons) and len(set(neurons)) == k, place,
             f"'neurons' must be {k} distinct neuron indices (k = {k})")
        for name in ("train_positives", "train_negatives", "test_positives", "test_negatives"):
            need(field_int(record, name, place) >= 1, place, f"'{name}' must be >= 1 (a probe needs both classes)")

    def check_best(self, record, header, number=None):
        self._common(record, header, where("probe", number, "best"))

    def check_causal(self, record, header, number=None):
        place = where("probe", number, "causal")
        need("causal" in header, place, "'causal' records belong in a stream whose header has 'causal'")
        field_int(record, "layer", place)
        expert = field_int(record, "expert", place)
        experts = field_int(record, "num_experts", place, minimum=1)
        need(expert < experts, place, f"'expert' {expert} must be < 'num_experts' {experts}")
        field_str(record, "explanation", place)
        field_map(record, "proposer", place)
        messages = record.get("messages")
        need(messages is None or (isinstance(messages, list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages)), place, "'messages' must be null or a list of {role, content} maps")
        triggers = field_list(record, "triggers", place)
        need(all(isinstance(t, str) for t in triggers), place, "'triggers' must be strings")
        for target in field_list(record, "targets", place):
            need(isinstance(target, dict) and isinstance(target.get("text"), str) and is_int(target.get("token_id"))
                 and target["token_id"] >= 0, place, "each of 'targets' must be {text, token_id >= 0, piece}")
        status = field_choice(record, "status", place, ("ok", "failed"))
        if status == "failed":
            field_str(record, "error", place)
            need("rank" not in record, place, "a failed record has no 'rank'")
            return
        need(bool(triggers) and bool(record["targets"]), place, "an ok record needs triggers and targets")
        rank = field_int(record, "rank", place, minimum=1, maximum=experts)
        need(record.get("top1") == (rank == 1) and record.get("top5") == (rank <= 5), place,
             "'top1'/'top5' must say rank == 1 / rank <= 5")
        field_number(record, "dla", place)
        tops = field_list(record, "top_experts", place)
        need(all(isinstance(t, dict) and is_int(t.get("expert")) and 0 <= t["expert"] < experts for t in tops),
             place, "each of 'top_experts' must be {expert < num_experts, dla}")

    def check_causal_layer(self, record, header, number=None):
        place = where("probe", number, "causal_layer")
        field_int(record, "layer", place)
        experts = field_int(record, "num_experts", place, minimum=1)
        field_int(record, "labels", place, minimum=1)
        for name in ("top1_rate", "top5_rate", "baseline_top1_rate", "baseline_top5_rate", "chance_top1",
                     "chance_top5"):
            value = field_number(record, name, place)
            need(0 <= value <= 1, place, f"'{name}' must be in [0, 1], got {value!r}")
        need(abs(record["chance_top1"] - 1 / experts) < 1e-9, place, "'chance_top1' must be 1 / num_experts")
        field_int(record, "baseline_shuffles", place, minimum=1)

    def check_end(self, end: dict, header: dict) -> None:
        summary = field_map(end, "summary", "probe end", optional=True)
        if summary is not None:
            skipped = field_map(summary, "skipped", "probe end summary")
            for reason, count in skipped.items():
                need(is_int(count) and count >= 0, "probe end summary",
                     f"'skipped.{reason}' must be an integer >= 0, got {count!r}")
