"""What ``moe-score join`` computes once routing and judged scores meet: EDMRS (paper 000 §4.1).

EDMRS_i^(d) = AF_i^(d) × EDMS_i^(d) = (EDMS_i^(d)/|T_d|) Σ_{t∈T_d} 1[E'_i(t)] — written as
``domains.<d>.edmrs`` in every joined ``expert`` record that has both ``af`` (routing, 000 eq. 6)
and ``edms`` (judged, 000 eq. 4) for domain d; ``edmrs_shuffled`` likewise from
``edms_shuffled`` (the shuffled-label baseline). null when either factor is null.
"""

from __future__ import annotations

EDMRS = {"scope": "domain", "definition": "000 sec. 4.1: EDMRS = AF x EDMS (af of the routing scores, edms of the "
                                          "judged scores)"}


def add_edmrs(extra: dict, records: list[dict]) -> int:
    """Add ``edmrs`` (and ``edmrs_shuffled``) in place; returns how many (expert, domain) pairs got one."""
    added, shuffled = 0, False
    for record in records:
        if record.get("type") != "expert":
            continue
        for values in (record.get("domains") or {}).values():
            if "af" not in values or "edms" not in values:
                continue
            af = values["af"]
            values["edmrs"] = af * values["edms"] if af is not None and values["edms"] is not None else None
            if "edms_shuffled" in values:
                base = values["edms_shuffled"]
                values["edmrs_shuffled"] = af * base if af is not None and base is not None else None
                shuffled = True
            added += 1
    if added:
        metrics = extra.setdefault("metrics", {})
        metrics["edmrs"] = EDMRS
        if shuffled:
            metrics["edmrs_shuffled"] = {"scope": "domain", "definition": "EDMRS with the shuffled-label EDMS "
                                                                         "(baseline)"}
    return added


__all__ = ["add_edmrs"]
