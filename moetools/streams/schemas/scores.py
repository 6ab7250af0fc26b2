"""The ``scores`` stream (formats/scores.md): one record per (layer, expert), metrics inside.

Open by design: producers (moe-score's routing statistics, and ``moe-score --labels``' judged detection scores)
add metric fields, per-domain fields and record types; this schema checks only what
every reader relies on: the identity (layer, expert) of ``expert`` records, that ``domains`` is
a map of maps, and that metric values are numbers, null, or (for structured metrics) maps.
"""

from __future__ import annotations

from ..schema import (
    Schema,
    is_int,
    is_non_finite,
    is_number,
    need,
    need_number,
    number_problem,
    register_schema,
    where,
)

IDENTITY = ("type", "layer", "expert")
#: judged detection scores (formats/scores.md "Judged scores"): shares in [0, 1] or null,
#: as record fields, inside ``domains.<d>`` (the ``edms*`` and ``edmrs*`` ones) or in ``layer`` records (lds)
JUDGED = ("ems", "precision", "recall", "f1", "balanced_accuracy")
JUDGED_DOMAIN = ("edms", "edms_precision", "edms_recall", "edms_f1", "edms_balanced_accuracy", "edmrs")


def _check_share(value, place: str, name: str) -> None:
    need(not is_non_finite(value), place, f"{name} {number_problem(value)}")
    need(value is None or (is_number(value) and 0 <= value <= 1), place, f"{name} {value!r} is not a share in [0, 1] "
         "or null")


def _check_verdicts(provenance: dict, place: str, name: str) -> None:
    """``judged.<p>.verdicts`` (formats/scores.md): where each judged sample is in the holdout, y, ŷ per repeat."""
    threshold = provenance.get("threshold")
    need_number(threshold, place, f"{name}.threshold", nullable=True)
    verdicts = provenance.get("verdicts")
    if verdicts is None:
        return
    need(isinstance(verdicts, list), place, f"{name}.verdicts is not a list")
    for k, verdict in enumerate(verdicts):
        at = f"{name}.verdicts[{k}]"
        need(isinstance(verdict, dict), place, f"{at} is not a map")
        side = verdict.get("holdout")
        need(side in ("positive", "negative"), place, f"{at}.holdout {side!r} is not 'positive' or 'negative'")
        need(is_int(verdict.get("index")) and verdict["index"] >= 0, place, f"{at}.index is not a non-negative "
             "integer")
        truth = verdict.get("y")
        need(is_int(truth) and truth in (0, 1), place,
             f"{at}.y {truth!r} is not 0 or 1")
        need(truth == (1 if side == "positive" else 0), place, f"{at}.y {truth} contradicts holdout.{side}")
        said = verdict.get("yhat")
        need(isinstance(said, list) and all(x is None or (is_int(x) and x in (0, 1)) for x in said), place,
             f"{at}.yhat is not a list of 0, 1 or null (one per repeat)")
        similarity = verdict.get("sim")
        need_number(similarity, place, f"{at}.sim", nullable=True)


def _check_value(value, place: str, name: str) -> None:
    need(not is_non_finite(value), place, f"{name} {number_problem(value)}")
    if value is None or is_number(value) or isinstance(value, (str, bool)):
        return
    if isinstance(value, dict):
        for key, inner in value.items():
            need(isinstance(key, str), place, f"{name} has a non-string key")
            _check_value(inner, place, f"{name}.{key}")
        return
    if isinstance(value, list):
        for inner in value:
            _check_value(inner, place, name)
        return
    need(False, place, f"{name} is a {type(value).__name__}, not a number, string, bool, null, map or list")


@register_schema
class ScoresSchema(Schema):
    kind = "scores"
    record_types = ()   # any type: ``expert`` records are checked, others are skipped by readers

    def check_header(self, header: dict) -> None:
        place = "scores header"
        layers = header.get("layers")
        if layers is not None:
            need(isinstance(layers, list) and all(is_int(x) and x >= 0 for x in layers), place,
                 "layers is not a list of layer indices")
        experts = header.get("num_experts")
        if experts is not None:
            need(is_int(experts) and experts > 0, place, "num_experts is not a positive integer")
        domains = header.get("domains")
        if domains is not None:
            need(isinstance(domains, list) and all(isinstance(d, str) for d in domains), place,
                 "domains is not a list of strings")
        shared = header.get("shared_routers")
        if shared is not None:
            need(isinstance(shared, list) and all(isinstance(g, list) and len(g) >= 2 and all(is_int(x) for x in g)
                                                  for g in shared), place,
                 "shared_routers is not a list of layer lists (two or more layers each)")
        metrics = header.get("metrics")
        if metrics is not None:
            need(isinstance(metrics, dict), place, "metrics is not a map of metric name -> description")
            for name, spec in metrics.items():
                need(isinstance(spec, dict) and spec.get("scope") in ("domain", "expert", "layer"), place,
                     f"metrics.{name} has no scope 'domain', 'expert' or 'layer'")

    def check_record(self, record: dict, header: dict, number: int | None = None) -> None:
        if record.get("type") == "layer":
            place = where("scores", number, f"layer record {record.get('layer')}")
            need(is_int(record.get("layer")) and record["layer"] >= 0, place, "layer is not a non-negative integer")
            for name in ("lds", "lds_shuffled"):
                _check_share(record.get(name), place, name)
            return
        if record.get("type") != "expert":
            return
        place = where("scores", number, f"layer {record.get('layer')}, expert {record.get('expert')}")
        need(is_int(record.get("layer")) and record["layer"] >= 0, place, "layer is not a non-negative integer")
        need(is_int(record.get("expert")) and record["expert"] >= 0, place, "expert is not a non-negative integer")
        layers = header.get("layers")
        if isinstance(layers, list):
            need(record["layer"] in layers, place, f"layer {record['layer']} is not in the header's layers")
        experts = header.get("num_experts")
        if is_int(experts):
            need(record["expert"] < experts, place, f"expert {record['expert']} >= num_experts {experts}")
        shared = record.get("shared_layers")
        if shared is not None:   # the layers this record's router routes: its own layer first
            need(isinstance(shared, list) and len(shared) >= 2 and all(is_int(x) and x >= 0 for x in shared)
                 and shared[0] == record["layer"], place,
                 f"shared_layers {shared!r} is not a list of two or more layers starting with layer {record['layer']}")
        domains = record.get("domains")
        if domains is not None:
            need(isinstance(domains, dict), place, "domains is not a map of domain -> metrics")
            for domain, values in domains.items():
                need(isinstance(values, dict), place, f"domains.{domain} is not a map of metric -> value")
                for name, value in values.items():
                    need_number(value, place, f"domains.{domain}.{name}", nullable=True)
        for name, value in record.items():
            if name in IDENTITY or name in ("domains", "shared_layers"):
                continue
            _check_value(value, place, name)
        for name in JUDGED:
            for suffix in ("", "_shuffled"):
                _check_share(record.get(name + suffix), place, name + suffix)
        for domain, values in (domains or {}).items():
            for name in JUDGED_DOMAIN:
                for suffix in ("", "_shuffled"):
                    _check_share(values.get(name + suffix), place, f"domains.{domain}.{name}{suffix}")
        health = record.get("health")
        if health is not None:   # routing health (formats/scores.md): two shares and two flags
            need(isinstance(health, dict), place, "health is not a map")
            for name in ("share", "tokens"):
                _check_share(health.get(name), place, f"health.{name}")
            for name in ("dead", "always_on"):
                need(health.get(name) is None or isinstance(health[name], bool), place,
                     f"health.{name} {health[name]!r} is not true, false or null")
        judged = record.get("judged")
        if judged is not None:
            need(isinstance(judged, dict) and all(isinstance(v, dict) and isinstance(v.get("scorer"), str)
                                                  for v in judged.values()), place,
                 "judged is not a map of prompt -> {scorer, status, ...}")
            for prompt, provenance in judged.items():
                _check_verdicts(provenance, place, f"judged.{prompt}")
        skew = record.get("skew")
        if skew is not None:
            need(isinstance(skew, dict), place, "skew is not a map")
            for name in ("ratio", "p", "q"):
                value = skew.get(name)
                need_number(value, place, f"skew.{name}", nullable=True)
            for name in ("p", "q"):
                value = skew.get(name)
                need(value is None or 0 <= value <= 1, place, f"skew.{name} {value} is outside [0, 1]")

    def check_end(self, end: dict, header: dict) -> None:
        summary = end.get("summary")
        need(summary is None or isinstance(summary, dict), "scores end record", "summary is not a map")
