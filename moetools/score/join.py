"""``moe-score join``: several scores streams of one model as one, record by (layer, expert).

The rules of formats/scores.md, *Extending*: ``expert`` records with the same (layer, expert)
merge field by field, their ``domains`` maps domain by domain and metric by metric; a metric
present in two inputs must have the same value (else a FormatError: two producers disagree);
records of other types pass through in input order; header ``metrics`` maps merge, ``source``
becomes the list of the inputs' sources, ``domains`` and ``layers`` the union. Memory: every
expert record of the inputs (scores streams are small: one record per layer × expert).
"""

from __future__ import annotations

from ..errors import FormatError, ModelMismatchError

HEADER_FIXED = ("type", "format", "version", "kind", "tool", "model")


def _merge_value(into: dict, name: str, value, where: str) -> None:
    if name not in into:
        into[name] = value
        return
    current = into[name]
    if isinstance(current, dict) and isinstance(value, dict):
        for key, inner in value.items():
            _merge_value(current, key, inner, f"{where}.{name}")
        return
    if current != value:
        raise FormatError(f"{where}: {name} is {current!r} in one input and {value!r} in another; "
                          "refusing to join disagreeing scores")


def join_streams(readers, names) -> tuple[dict, dict, list[dict], dict]:
    """(model, header extra, records, end summary) of the joined streams."""
    experts: dict[tuple[int, int], dict] = {}
    others: list[dict] = []
    headers, summaries = [], []
    for reader, name in zip(readers, names):
        for record in reader:
            if record.get("type") == "expert":
                key = (int(record["layer"]), int(record["expert"]))
                merged = experts.setdefault(key, {"type": "expert", "layer": key[0], "expert": key[1]})
                for field, value in record.items():
                    if field in ("type", "layer", "expert"):
                        continue
                    _merge_value(merged, field, value, f"layer {key[0]} expert {key[1]}")
            else:
                others.append(record)
        header = reader.header
        if headers and (header.get("model") or {}).get("fingerprint") != \
                (headers[0].get("model") or {}).get("fingerprint"):
            raise ModelMismatchError(f"{name}: scores of another model than {names[0]} "
                                     f"({(header.get('model') or {}).get('fingerprint')} vs "
                                     f"{(headers[0].get('model') or {}).get('fingerprint')}); refusing to join")
        headers.append(header)
        summaries.append({"path": name, **(reader.ends[-1].get("summary") or {})} if reader.ends else {"path": name})
    extra: dict = {}
    for header in headers:
        for field, value in header.items():
            if field in HEADER_FIXED or field in ("source", "metrics", "domains", "layers", "inputs"):
                continue
            extra.setdefault(field, value)
    extra["source"] = [h.get("source") for h in headers]
    extra["metrics"] = {}
    for header in headers:
        extra["metrics"].update(header.get("metrics") or {})
    extra["domains"] = list(dict.fromkeys(d for h in headers for d in (h.get("domains") or [])))
    extra["layers"] = sorted({layer for h in headers for layer in (h.get("layers") or [])} |
                             {key[0] for key in experts})
    extra["inputs"] = [{"path": name, "source": h.get("source"), "tool": h.get("tool")}
                       for name, h in zip(names, headers)]
    records = [experts[key] for key in sorted(experts)] + others
    return headers[0].get("model"), extra, records, {"joined": len(headers), "summaries": summaries}


__all__ = ["join_streams"]
